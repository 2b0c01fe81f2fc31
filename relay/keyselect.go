package relay

import (
	"crypto/md5" //nolint:gosec // the STUN long-term key is MD5 (RFC 8489)
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/relay/internal/frames"
)

// With several TURN REST secrets the relay must hand pion the one key that
// the client's MESSAGE-INTEGRITY was made with, but pion's AuthHandler sees
// only the username. So the listener sockets keep a copy of each signed
// request as it is read (pion handles it on the same goroutine right after),
// and the AuthHandler tries every secret's key against that copy. Only
// signed requests are copied, and only while more than one secret is
// configured: media (ChannelData, Send indications) is never touched.

// The copies of signed requests pion refused before asking for a key (a
// stale nonce, say) are never taken: maxSignedPending bounds them, each
// source holds at most signedPerSource, and each expires after signedTTL
// (pion asks for the key right after the request is read).
const (
	maxSignedPending = 4096
	signedPerSource  = 64
	signedTTL        = 10 * time.Second
)

// signedRequests holds the copies, by srcKey + "\x00" + username.
type signedRequests struct {
	m *boundedMap[[]byte]
}

func newSignedRequests() signedRequests {
	return signedRequests{m: newBoundedMap[[]byte](maxSignedPending, signedPerSource, signedTTL)}
}

// observe copies a signed request from src so the AuthHandler can find it.
func (r *signedRequests) observe(src string, b []byte) {
	if !frames.IsSignedRequest(b) {
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return
	}
	var u stun.Username
	if u.GetFrom(m) != nil {
		return
	}
	r.m.put(src+"\x00"+string(u), m.Raw, time.Now())
}

func (r *signedRequests) take(src, username string) *stun.Message {
	raw, ok := r.m.take(src+"\x00"+username, time.Now())
	if !ok {
		return nil
	}
	m := &stun.Message{Raw: raw}
	if m.Decode() != nil {
		return nil
	}
	return m
}

// selectKey returns the long-term key, among one per candidate password,
// that verifies msg; with no message or no match it returns the first, and
// pion's own integrity check then refuses the request.
func selectKey(username, realm string, passwords []string, msg *stun.Message) []byte {
	first := longTermKey(username, realm, passwords[0])
	if len(passwords) == 1 || msg == nil {
		return first
	}
	for i, pw := range passwords {
		key := first
		if i > 0 {
			key = longTermKey(username, realm, pw)
		}
		if stun.MessageIntegrity(key).Check(msg) == nil {
			return key
		}
	}
	return first
}

// longTermKey is turn.GenerateAuthKey — MD5(username ":" realm ":"
// password), RFC 8489 §9.2.2 — hashed from a stack buffer: one allocation,
// the key, where pion's joins, formats and hashes through an interface.
func longTermKey(username, realm, password string) []byte {
	var buf [256]byte
	b := append(buf[:0], username...)
	b = append(b, ':')
	b = append(b, realm...)
	b = append(b, ':')
	b = append(b, password...)
	sum := md5.Sum(b) //nolint:gosec // the long-term key is MD5 by definition
	return sum[:]
}
