package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// KeyTagLen is the length of a key tag, in hex digits.
const KeyTagLen = 8

// KeyTag names an API key inside the TURN usernames minted from Access
// Tokens it signed, so that deleting the key can cut their allocations:
// the first 8 hex digits of SHA-256 of the key SID. It carries nothing
// secret (a key SID is not a secret) and costs the relay no lookup. Two
// keys of one account share a tag with odds of 1 in 2^32; deleting one then
// cuts the other's live allocations too, never fewer.
func KeyTag(keySid string) string {
	sum := sha256.Sum256([]byte(keySid))
	return hex.EncodeToString(sum[:KeyTagLen/2])
}

// KeyTagOf returns the key tag of an issuer-minted client-side user part,
// "<AccountSid>:<identity>:<tag><random>": the first KeyTagLen characters
// of its last field. ok is false for any other shape (a Tokens-resource user
// "<AccountSid>:<random>", a static user).
func KeyTagOf(user string) (tag string, ok bool) {
	if _, ok := AccountOf(user); !ok || strings.Count(user, ":") != 2 {
		return "", false
	}
	last := user[strings.LastIndexByte(user, ':')+1:]
	if len(last) < KeyTagLen {
		return "", false
	}
	return last[:KeyTagLen], true
}
