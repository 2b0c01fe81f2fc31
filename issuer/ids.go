package issuer

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// SID prefixes, as Twilio's.
const (
	AccountSidPrefix = "AC"
	KeySidPrefix     = "SK"
)

// newSid returns prefix followed by 32 lowercase hex digits.
func newSid(prefix string) string { return prefix + randomHex(16) }

// randomHex returns n random bytes as 2n lowercase hex digits. crypto/rand
// does not fail (it crashes the program instead).
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n random characters from [A-Za-z0-9], without modulo
// bias (bytes of 248 and above are rejected).
func randomAlnum(n int) string {
	var sb strings.Builder
	sb.Grow(n)
	buf := make([]byte, n+n/4)
	for sb.Len() < n {
		rand.Read(buf)
		for _, c := range buf {
			if c < 248 && sb.Len() < n {
				sb.WriteByte(alnum[int(c)%len(alnum)])
			}
		}
	}
	return sb.String()
}

// ValidSid reports whether s is prefix followed by 32 lowercase hex digits.
func ValidSid(prefix, s string) bool {
	if len(s) != len(prefix)+32 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
