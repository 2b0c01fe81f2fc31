package relay

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/relay/internal/frames"
)

// pion/turn v4 answers a refused credential with an unsigned 400 Bad
// Request. RFC 8656 (and coturn) answer 401, and pion's own newer client —
// the one pion/webrtc uses — ignores an unsigned 400 and retransmits for
// seconds, each retransmission counted as another refusal. So when the relay
// refuses a credential it marks the client, and the listener rewrites the
// error pion sends that client next into a 401 with our realm and a nonce.

// refusalWindow bounds how long a mark waits for pion's error response,
// which pion sends right after the AuthHandler returns.
const refusalWindow = 2 * time.Second

// The 401 must carry a nonce the client's next request may use, or that
// request is answered 438 Stale Nonce and costs another round trip. pion's
// nonces are its own (an HMAC with a key we cannot reach, valid an hour), so
// the relay notes each nonce pion sends a client in a 401 or 438 and hands
// that one back: the client's own, which pion has just accepted (it checks
// the nonce before it asks for the key). nonceTTL keeps inside pion's hour.
const (
	nonceTTL       = 50 * time.Minute
	maxNonces      = 16384
	noncePerSource = 256
	maxRefusals    = 4096
	refusalPerSrc  = 64
)

// refusals are the marks the AuthHandler leaves for the listener, by srcKey.
type refusals struct {
	m *boundedMap[refusal]
}

type refusal struct {
	notOwner bool // the client holds an allocation made under another username
}

func newRefusals() refusals {
	return refusals{m: newBoundedMap[refusal](maxRefusals, refusalPerSrc, refusalWindow)}
}

func (r *refusals) mark(key string, notOwner bool, now time.Time) {
	r.m.put(key, refusal{notOwner: notOwner}, now)
}

func (r *refusals) take(key string, now time.Time) (refusal, bool) {
	return r.m.take(key, now)
}

// nonces remembers the last nonce pion issued to each client (by srcKey),
// and the last one it issued to anyone, for a client whose own was pushed
// out.
type nonces struct {
	m      *boundedMap[string]
	mu     sync.Mutex
	last   string
	lastAt time.Time
}

func newNonces() *nonces {
	return &nonces{m: newBoundedMap[string](maxNonces, noncePerSource, nonceTTL)}
}

// note records the NONCE of pion's error response b to the client key.
func (n *nonces) note(b []byte, key string, now time.Time) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	var nonce stun.Nonce
	if m.Decode() != nil || nonce.GetFrom(m) != nil {
		return
	}
	v := string(nonce)
	n.m.put(key, v, now)
	n.mu.Lock()
	n.last, n.lastAt = v, now
	n.mu.Unlock()
}

// forClient is the nonce to hand key: its own, else the latest pion issued
// (pion's nonces are not bound to a client), else a random one.
func (n *nonces) forClient(key string, now time.Time) string {
	if v, ok := n.m.get(key, now); ok {
		return v
	}
	n.mu.Lock()
	v, at := n.last, n.lastAt
	n.mu.Unlock()
	if v != "" && now.Sub(at) < nonceTTL {
		return v
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// unauthorized turns pion's 400 for a refused request into the answer RFC
// 8656 gives: 401 with REALM and NONCE for bad credentials; for a client
// that holds an allocation made under another username, 437 Allocation
// Mismatch to an Allocate (it should retry from another port) and 441 Wrong
// Credentials to anything else. Other responses are returned as they are.
func (s *Server) unauthorized(b []byte, key string) []byte {
	if !frames.IsErrorResponse(b) {
		return b
	}
	now := time.Now()
	f, ok := s.refusals.take(key, now)
	if !ok {
		s.nonces.note(b, key, now)
		return b
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	var code stun.ErrorCodeAttribute
	if m.Decode() != nil || code.GetFrom(m) != nil || code.Code != stun.CodeBadRequest {
		return b
	}
	setters := []stun.Setter{stun.NewTransactionIDSetter(m.TransactionID), m.Type}
	switch {
	case f.notOwner && m.Type.Method == stun.MethodAllocate:
		setters = append(setters, &stun.ErrorCodeAttribute{Code: stun.CodeAllocMismatch, Reason: []byte("Allocation Mismatch")})
	case f.notOwner:
		setters = append(setters, &stun.ErrorCodeAttribute{Code: stun.CodeWrongCredentials, Reason: []byte("Wrong Credentials")})
	default:
		setters = append(setters, &stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
			stun.NewRealm(s.realm), stun.NewNonce(s.nonces.forClient(key, now)))
	}
	out, err := stun.Build(append(setters, stun.Fingerprint)...)
	if err != nil {
		return b
	}
	return out.Raw
}
