package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/store"
)

// This file is the logic of the client-side ICE-servers endpoint
// (POST /v1/ice-servers, served in iceservers_http.go): a browser presents a
// Twilio Access Token or Capability Token instead of the account's secrets
// and gets the Tokens resource's answer, with a TURN credential that never
// outlives the token.

// Token kinds AuthenticateToken tells apart by the JWT header: an Access
// Token's header carries "cty" (twilio-fpa;v=1), a Capability Token's does not.
const (
	TokenKindAccess     = "access"
	TokenKindCapability = "capability"
)

// MaxIdentityLen caps the identity (or client name) carried in a TURN
// username, in bytes after sanitising.
const MaxIdentityLen = 64

// anonymousIdentity stands in the TURN username for a token without identity.
const anonymousIdentity = "anonymous"

// Authentication failure reasons of token refusals (traverse_issuer_auth_failures_total),
// beside missing, unknown_sid (no such key or account, or a key of another
// account: 20151), wrong_secret (bad signature: 20107) and suspended (20151).
const (
	reasonTokenMalformed   = "token_malformed"     // 20101, 20102, 20103, 20106, 20160
	reasonTokenExpired     = "token_expired"       // 20104
	reasonTokenNotYetValid = "token_not_yet_valid" // 20105
	reasonTokenTooLong     = "token_too_long"      // 20157
)

var tokenReasons = []string{reasonTokenMalformed, reasonTokenExpired, reasonTokenNotYetValid, reasonTokenTooLong}

// errNoToken marks the refusal of a request that presented no token at all.
var errNoToken = errors.New("no token presented")

// noTokenError is the refusal of a request without a token: a
// *auth.TokenError with code 20101 that also matches errNoToken.
func noTokenError() error {
	return &auth.TokenError{Code: auth.CodeTokenInvalid, Message: auth.ErrTokenInvalid.Message, Detail: "no token", Err: errNoToken}
}

// TokenPrincipal is who a verified Access or Capability Token speaks for.
type TokenPrincipal struct {
	// Kind is TokenKindAccess or TokenKindCapability.
	Kind string
	// Account is the token's account, active when the token was verified.
	Account store.Account
	// KeySid is the API key that signed an Access Token; empty for a
	// Capability Token (signed with the account's auth token).
	KeySid string
	// Identity is the Access Token's identity, or the Capability Token's
	// client name (incoming scope first, then outgoing); possibly empty.
	Identity string
	// ExpiresAt is the token's exp: no credential minted for it outlives it.
	ExpiresAt time.Time
	// TTLCap is the nts grant's cap on credential lifetime; 0 for none.
	TTLCap time.Duration
	// Client is the address the request came from (see clientAddr), for
	// the choice of relays; the zero Addr when unknown.
	Client netip.Addr
}

// tokenLookup records, for one verification, what the store said: why a
// lookup failed (the reason counted), an internal error (a store failure,
// which is not the caller's fault), the account found, and the SID looked up
// (for the debug log; a SID is not a secret).
type tokenLookup struct {
	reason   string
	internal error
	account  store.Account
	sid      string
}

// getAccount fetches accountSid and requires it, and its parent, active.
func (l *tokenLookup) getAccount(ctx context.Context, st store.Store, accountSid string) (store.Account, error) {
	a, err := st.GetAccount(ctx, accountSid)
	if err != nil {
		return store.Account{}, l.fail(err)
	}
	active, err := accountActive(ctx, st, a)
	if err != nil {
		l.internal = err
		return store.Account{}, err
	}
	if !active {
		l.reason = reasonSuspended
		return store.Account{}, ErrAccountNotActive
	}
	l.account = a
	return a, nil
}

// fail records a store error: not found is the caller's, anything else ours.
func (l *tokenLookup) fail(err error) error {
	if errors.Is(err, ErrNotFound) {
		l.reason = reasonUnknownSid
	} else {
		l.internal = err
	}
	return err
}

// AuthenticateToken verifies an Access Token (signed with an API key's
// secret) or a Capability Token (signed with the account's auth token),
// telling them apart by the JWT header. Keys and accounts are read from the
// store on every call: a deleted key, or a suspended account, refuses every
// token at once. A refusal is a *auth.TokenError with Twilio's code (20151
// for an unknown or deleted key, a key of another account, or a suspended
// account), counted in traverse_issuer_auth_failures_total; a store failure
// is returned as itself (an internal error).
func (s *Service) AuthenticateToken(ctx context.Context, token string) (TokenPrincipal, error) {
	if token == "" {
		s.refuseToken(noTokenError(), reasonMissing, "", "")
		return TokenPrincipal{}, noTokenError()
	}
	now := s.now()
	var (
		p   TokenPrincipal
		l   tokenLookup
		err error
	)
	p.Kind = tokenKind(token)
	if p.Kind == TokenKindAccess {
		var c *auth.AccessClaims
		c, err = auth.VerifyAccessToken(token, func(keySid string) (string, []byte, error) {
			l.sid = keySid
			if !ValidSid(KeySidPrefix, keySid) {
				l.reason = reasonUnknownSid
				return "", nil, ErrNotFound
			}
			k, err := s.store.GetKey(ctx, keySid)
			if err != nil {
				return "", nil, l.fail(err)
			}
			if _, err := l.getAccount(ctx, s.store, k.AccountSid); err != nil {
				return "", nil, err
			}
			return k.AccountSid, []byte(k.Secret), nil
		}, now)
		if err == nil {
			p.KeySid, p.Identity, p.ExpiresAt, p.TTLCap = c.KeySid, c.Identity, c.ExpiresAt, c.NTSTTL
		}
	} else {
		var c *auth.CapabilityClaims
		c, err = auth.VerifyCapabilityToken(token, func(accountSid string) ([]byte, error) {
			l.sid = accountSid
			if !ValidSid(AccountSidPrefix, accountSid) {
				l.reason = reasonUnknownSid
				return nil, ErrNotFound
			}
			a, err := l.getAccount(ctx, s.store, accountSid)
			if err != nil {
				return nil, err
			}
			return []byte(a.AuthToken), nil
		}, now)
		if err == nil {
			p.ExpiresAt = c.ExpiresAt
			if in, ok := c.Incoming(); ok {
				p.Identity = in.ClientName
			} else if out, ok := c.Outgoing(); ok {
				p.Identity = out.ClientName
			}
		}
	}
	if l.internal != nil {
		return TokenPrincipal{}, fmt.Errorf("issuer: token key lookup: %w", l.internal)
	}
	if err != nil {
		s.refuseToken(err, l.reason, p.Kind, l.sid)
		return TokenPrincipal{}, err
	}
	p.Account = l.account
	return p, nil
}

// refuseToken counts a token refusal and logs it at debug (the token is
// attacker-controlled input): the code, the reason and at most a SID.
func (s *Service) refuseToken(err error, lookupReason, kind, sid string) {
	reason := tokenReason(auth.CodeOf(err), lookupReason)
	s.metrics.authFailures.WithLabelValues(reason).Inc()
	if ce := s.log.Check(zap.DebugLevel, "token refused"); ce != nil {
		ce.Write(zap.Int("code", auth.CodeOf(err)), zap.String("reason", reason),
			zap.String("kind", kind), zap.String("sid", loggableSid(sid)))
	}
}

// tokenReason is the failure reason counted for a refusal with code.
func tokenReason(code int, lookupReason string) string {
	if lookupReason != "" {
		return lookupReason
	}
	switch code {
	case auth.CodeTokenAuth:
		return reasonUnknownSid
	case auth.CodeTokenSignature:
		return reasonWrongSecret
	case auth.CodeTokenExpired:
		return reasonTokenExpired
	case auth.CodeTokenNotYetValid:
		return reasonTokenNotYetValid
	case auth.CodeTokenTooLong:
		return reasonTokenTooLong
	}
	return reasonTokenMalformed
}

// tokenKind reads the JWT header: with a "cty" it is an Access Token, else a
// Capability Token. A header that does not decode goes to the Access Token
// verifier, which says why (20101, 20102).
func tokenKind(token string) string {
	h, _, ok := strings.Cut(token, ".")
	if !ok || len(h) > 4096 {
		return TokenKindAccess
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return TokenKindAccess
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(b, &header); err != nil {
		return TokenKindAccess
	}
	if _, ok := header["cty"]; ok {
		return TokenKindAccess
	}
	return TokenKindCapability
}

// CreateICEServers mints the TURN credential for a verified token, with user
// "<AccountSid>:<identity>:<16 hex>" (identity sanitised), or
// "<AccountSid>:<16 hex>" for a token without identity. Its ttl is the least of requested (a valid Ttl, see ParseTTL),
// auth.max_ttl, the nts grant's cap, and the whole seconds left until the
// token's exp, so the credential never outlives the token. A token with less
// than a second left is refused with 20104.
func (s *Service) CreateICEServers(p TokenPrincipal, requested time.Duration) (Token, error) {
	if requested < MinTTL || requested > MaxTTL || requested%time.Second != 0 {
		return Token{}, &ParamError{Param: "Ttl", Message: fmt.Sprintf(
			"Invalid Ttl: must be a whole number of seconds from 1 to 86400 (got %s)", requested)}
	}
	now := s.now().UTC().Truncate(time.Second)
	ttl := min(requested, s.maxTTL)
	if p.TTLCap > 0 {
		ttl = min(ttl, p.TTLCap)
	}
	left := p.ExpiresAt.Sub(now).Truncate(time.Second)
	if left < MinTTL {
		err := &auth.TokenError{Code: auth.CodeTokenExpired, Message: auth.ErrTokenExpired.Message, Detail: "less than a second left"}
		s.refuseToken(err, "", p.Kind, p.KeySid)
		return Token{}, err
	}
	ttl = min(ttl, left)
	// A token without identity names no end user: its credential is a user
	// of its own, as a Tokens-resource credential is, so that the relay's
	// per-user quota is not one bucket shared by every anonymous browser.
	// The last field starts with the signing key's tag (auth.KeyTag), so
	// that deleting the key cuts the allocations made with it.
	random := randomHex(8)
	if p.KeySid != "" {
		random = auth.KeyTag(p.KeySid) + randomHex(auth.KeyTagLen/2)
	}
	user := p.Account.Sid + ":" + random
	if p.Identity != "" {
		user = p.Account.Sid + ":" + SanitizeIdentity(p.Identity) + ":" + random
	}
	tok, err := s.mint(p.Account.Sid, user, ttl, now, p.Client)
	if err != nil {
		return Token{}, err
	}
	s.metrics.iceServersIssued.WithLabelValues(p.Kind).Inc()
	return tok, nil
}

// SanitizeIdentity makes an identity safe inside a STUN USERNAME and a TURN
// REST user: letters, digits and "_.-@" are kept, every other character
// (":" included, the separator) becomes "_", and the result is cut to
// MaxIdentityLen bytes. An empty identity is "anonymous".
func SanitizeIdentity(identity string) string {
	var b strings.Builder
	for _, r := range identity {
		if b.Len() >= MaxIdentityLen {
			break
		}
		switch {
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-@", r)):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return anonymousIdentity
	}
	return b.String()
}
