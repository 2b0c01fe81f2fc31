package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// nonceTTL is how long a nonce is good for (RFC 8656 § 4 suggests an hour);
// after it the client gets 438 Stale Nonce and retries with a fresh one.
const nonceTTL = time.Hour

// nonceSigner makes and checks nonces without keeping any: a nonce is its
// expiry time and a MAC of it under a key made at start (RFC 8489 § 9.2
// leaves the form to the server). Any nonce the process handed out stays
// good until it expires, from any source: a refused client's next request
// may reuse the nonce of its refusal.
type nonceSigner struct {
	key [32]byte
}

func newNonceSigner() *nonceSigner {
	n := &nonceSigner{}
	_, _ = rand.Read(n.key[:])
	return n
}

// nonceMACSize is how much of the MAC a nonce carries.
const nonceMACSize = 12

func (n *nonceSigner) mac(expiry []byte) []byte {
	h := hmac.New(sha256.New, n.key[:])
	h.Write(expiry)
	return h.Sum(nil)[:nonceMACSize]
}

// make returns a nonce good until now + nonceTTL.
func (n *nonceSigner) make(now time.Time) string {
	var b [8 + nonceMACSize]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Add(nonceTTL).Unix()))
	copy(b[8:], n.mac(b[:8]))
	return hex.EncodeToString(b[:])
}

// valid reports whether v is a nonce this signer made that has not expired.
func (n *nonceSigner) valid(v string, now time.Time) bool {
	var b [8 + nonceMACSize]byte
	if hex.DecodedLen(len(v)) != len(b) {
		return false
	}
	if _, err := hex.Decode(b[:], []byte(v)); err != nil {
		return false
	}
	if !hmac.Equal(b[8:], n.mac(b[:8])) {
		return false
	}
	return now.Unix() < int64(binary.BigEndian.Uint64(b[:8]))
}
