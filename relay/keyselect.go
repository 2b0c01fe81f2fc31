package relay

import (
	"crypto/md5" //nolint:gosec // the STUN long-term key is MD5 (RFC 8489)

	"github.com/pion/stun/v3"
)

// With several TURN REST secrets the client's MESSAGE-INTEGRITY tells which
// one its password was minted from: selectKey tries each.

// selectKey returns the long-term key, among one per candidate password,
// that verifies msg; with no match it returns the first, and the integrity
// check then refuses the request.
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
