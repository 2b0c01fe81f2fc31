// Package auth owns traverse's credential formats: TURN REST credentials
// (draft-uberti-behave-turn-rest), Twilio Access Tokens and Capability Tokens.
// Everything here is pure: the clock is passed in and there is no I/O, so the
// issuer that mints and the relay that verifies share one implementation.
package auth

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST draft specifies.
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Reasons a TURN REST credential is refused. The relay counts them by name.
var (
	ErrMalformed    = errors.New("malformed username")
	ErrExpired      = errors.New("credential expired")
	ErrTooFarFuture = errors.New("expiry too far in the future")
	ErrBadPassword  = errors.New("wrong password")
	ErrNoSecret     = errors.New("no secret configured")
)

// MaxUsernameLen is the longest USERNAME a STUN message may carry (RFC 8489).
const MaxUsernameLen = 512

// Credential is a minted TURN REST credential.
type Credential struct {
	Username string
	Password string
	Expires  time.Time
	TTL      time.Duration
}

// Policy bounds the expiry a credential may carry.
type Policy struct {
	// MaxTTL is the furthest past now an expiry may lie.
	MaxTTL time.Duration
	// ClockSkew is tolerated on both sides.
	ClockSkew time.Duration
}

// Password derives the TURN REST password for username:
// base64(HMAC-SHA1(secret, username)).
func Password(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Mint makes a credential for user that expires ttl after now.
func Mint(secret []byte, user string, ttl time.Duration, now time.Time) (Credential, error) {
	if len(secret) == 0 {
		return Credential{}, ErrNoSecret
	}
	if ttl < time.Second {
		return Credential{}, fmt.Errorf("ttl must be at least 1s (got %s)", ttl)
	}
	exp := now.Add(ttl).Truncate(time.Second)
	username := strconv.FormatInt(exp.Unix(), 10)
	if user != "" {
		username += ":" + user
	}
	if len(username) > MaxUsernameLen {
		return Credential{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxUsernameLen)
	}
	return Credential{Username: username, Password: Password(secret, username), Expires: exp, TTL: ttl}, nil
}

// ParseUsername splits a TURN REST username "<unix-expiry>[:<user>]". The user
// part may itself contain colons.
func ParseUsername(username string) (expires time.Time, user string, err error) {
	if username == "" || len(username) > MaxUsernameLen {
		return time.Time{}, "", ErrMalformed
	}
	ts, user, _ := strings.Cut(username, ":")
	if ts == "" || len(ts) > 12 {
		return time.Time{}, "", ErrMalformed
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return time.Time{}, "", ErrMalformed
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", ErrMalformed
	}
	return time.Unix(sec, 0), user, nil
}

// CheckUsername parses username and checks its expiry against now and p. It
// does not check a password: the relay leaves that to STUN MESSAGE-INTEGRITY.
func CheckUsername(username string, now time.Time, p Policy) (expires time.Time, user string, err error) {
	expires, user, err = ParseUsername(username)
	if err != nil {
		return expires, user, err
	}
	if !now.Before(expires.Add(p.ClockSkew)) {
		return expires, user, ErrExpired
	}
	if expires.After(now.Add(p.MaxTTL + p.ClockSkew)) {
		return expires, user, ErrTooFarFuture
	}
	return expires, user, nil
}

// Secrets is a ring of TURN REST secrets: the first mints, every one verifies.
type Secrets struct {
	keys [][]byte
	// macs keeps, per secret, HMACs keyed once: the relay derives a password
	// on every authenticated request, and a fresh HMAC is ~900 bytes of
	// garbage each time.
	macs []sync.Pool
}

// NewSecrets builds a ring; the first secret is the one that mints.
func NewSecrets(secrets []string) *Secrets {
	r := &Secrets{macs: make([]sync.Pool, len(secrets))}
	for i, s := range secrets {
		key := []byte(s)
		r.keys = append(r.keys, key)
		r.macs[i].New = func() any { return hmac.New(sha1.New, key) }
	}
	return r
}

// password is Password(r.keys[i], username) with a pooled HMAC.
func (r *Secrets) password(i int, username string) string {
	m := r.macs[i].Get().(hash.Hash)
	m.Reset()
	_, _ = io.WriteString(m, username)
	var sum [sha1.Size]byte
	s := base64.StdEncoding.EncodeToString(m.Sum(sum[:0]))
	r.macs[i].Put(m)
	return s
}

// Len is the number of secrets in the ring.
func (r *Secrets) Len() int { return len(r.keys) }

// Mint makes a credential with the first secret.
func (r *Secrets) Mint(user string, ttl time.Duration, now time.Time) (Credential, error) {
	if len(r.keys) == 0 {
		return Credential{}, ErrNoSecret
	}
	return Mint(r.keys[0], user, ttl, now)
}

// Passwords returns the password each secret gives username, in ring order.
// The relay turns them into candidate long-term keys.
func (r *Secrets) Passwords(username string) []string {
	out := make([]string, len(r.keys))
	for i := range r.keys {
		out[i] = r.password(i, username)
	}
	return out
}

// Verify checks username's expiry and that password matches one of the
// secrets, comparing in constant time. It returns the user part.
func (r *Secrets) Verify(username, password string, now time.Time, p Policy) (string, error) {
	_, user, err := CheckUsername(username, now, p)
	if err != nil {
		return "", err
	}
	if len(r.keys) == 0 {
		return "", ErrNoSecret
	}
	ok := 0
	for i := range r.keys {
		ok |= subtle.ConstantTimeCompare([]byte(r.password(i, username)), []byte(password))
	}
	if ok != 1 {
		return "", ErrBadPassword
	}
	return user, nil
}

// AccountOf returns the AccountSid that a TURN REST user part begins with:
// the issuer mints users "<AccountSid>:<…>" (Tokens resource and
// /v1/ice-servers). A user of any other shape (a static user, one minted by
// `traverse credentials`) has no account, and ok is false.
func AccountOf(user string) (sid string, ok bool) {
	sid, _, _ = strings.Cut(user, ":")
	if !validSid(sid, "AC") {
		return "", false
	}
	return sid, true
}
