package relay

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"

	"github.com/pion/stun/v3"
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

type refusals struct {
	mu sync.Mutex
	m  map[string]refusal
}

type refusal struct {
	at       time.Time
	notOwner bool // the client holds an allocation made under another username
}

func (r *refusals) mark(key string, notOwner bool, now time.Time) {
	r.mu.Lock()
	if r.m == nil || len(r.m) >= maxSignedPending {
		r.m = map[string]refusal{}
	}
	r.m[key] = refusal{at: now, notOwner: notOwner}
	r.mu.Unlock()
}

func (r *refusals) take(key string, now time.Time) (refusal, bool) {
	r.mu.Lock()
	f, ok := r.m[key]
	delete(r.m, key)
	r.mu.Unlock()
	return f, ok && now.Sub(f.at) < refusalWindow
}

// isErrorResponse is a cheap look at an outgoing datagram: a STUN error
// response (class bits C1 C0 = 11).
func isErrorResponse(b []byte) bool {
	return len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint16(b[0:2])&0x0110 == 0x0110 &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// unauthorized turns pion's 400 for a refused request into the answer RFC
// 8656 gives: 401 with REALM and NONCE for bad credentials; for a client
// that holds an allocation made under another username, 437 Allocation
// Mismatch to an Allocate (it should retry from another port) and 441 Wrong
// Credentials to anything else. Other responses are returned as they are.
func (s *Server) unauthorized(b []byte, key string) []byte {
	if !isErrorResponse(b) {
		return b
	}
	f, ok := s.refusals.take(key, time.Now())
	if !ok {
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
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		setters = append(setters, &stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
			stun.NewRealm(s.realm), stun.NewNonce(hex.EncodeToString(nonce)))
	}
	out, err := stun.Build(append(setters, stun.Fingerprint)...)
	if err != nil {
		return b
	}
	return out.Raw
}
