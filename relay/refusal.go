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
	m  map[string]time.Time
}

func (r *refusals) mark(key string, now time.Time) {
	r.mu.Lock()
	if r.m == nil || len(r.m) >= maxSignedPending {
		r.m = map[string]time.Time{}
	}
	r.m[key] = now
	r.mu.Unlock()
}

func (r *refusals) take(key string, now time.Time) bool {
	r.mu.Lock()
	at, ok := r.m[key]
	delete(r.m, key)
	r.mu.Unlock()
	return ok && now.Sub(at) < refusalWindow
}

// isErrorResponse is a cheap look at an outgoing datagram: a STUN error
// response (class bits C1 C0 = 11).
func isErrorResponse(b []byte) bool {
	return len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint16(b[0:2])&0x0110 == 0x0110 &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// unauthorized turns pion's 400 for a refused credential into a 401 with
// REALM and NONCE, as RFC 8489 §9.2 has it. Anything else is returned as is.
func (s *Server) unauthorized(b []byte, key string) []byte {
	if !isErrorResponse(b) || !s.refusals.take(key, time.Now()) {
		return b
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	var code stun.ErrorCodeAttribute
	if m.Decode() != nil || code.GetFrom(m) != nil || code.Code != stun.CodeBadRequest {
		return b
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	out, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID), m.Type,
		&stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized, Reason: []byte("Unauthorized")},
		stun.NewRealm(s.realm), stun.NewNonce(hex.EncodeToString(nonce)), stun.Fingerprint)
	if err != nil {
		return b
	}
	return out.Raw
}
