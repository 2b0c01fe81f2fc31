// Package issuer is traverse's credential issuer: a Service that
// authenticates accounts and API keys against the store, manages them, and
// mints short-lived TURN REST credentials returned as Twilio's Tokens
// resource or, for a browser holding an Access or Capability Token, by
// POST /v1/ice-servers (iceservers.go); and, in http.go and
// iceservers_http.go, the thin HTTP handlers. Only those two import net/http.
package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/keyrate"
	"github.com/traverse/traverse/store"
)

// Errors the service returns; writeError in http.go maps each to Twilio's
// error JSON.
var (
	// ErrUnauthenticated: missing or wrong credentials, or a suspended account.
	ErrUnauthenticated = errors.New("issuer: authentication failed")
	// ErrNotFound: no such account or key, or not the caller's. It is
	// store.ErrNotFound, so either matches with errors.Is.
	ErrNotFound = store.ErrNotFound
	// ErrInvalidParameter: a request parameter is out of range or malformed;
	// the error is a *ParamError that names it.
	ErrInvalidParameter = errors.New("issuer: invalid parameter")
	// ErrForbidden: the caller may not do this (a subaccount creating a subaccount).
	ErrForbidden = errors.New("issuer: forbidden")
	// ErrAccountNotActive: the account acted on is suspended.
	ErrAccountNotActive = errors.New("issuer: account not active")
	// ErrNoSecret: no TURN REST secret is configured, so no token can be minted.
	ErrNoSecret = errors.New("issuer: no TURN REST secret configured")
	// ErrRateLimited: too many failed authentications from this client.
	ErrRateLimited = errors.New("issuer: too many failed authentications")
	// ErrMintRateLimited: the account minted more than
	// issuer.tokens_per_second allows. It matches ErrRateLimited (429, 20429).
	ErrMintRateLimited = fmt.Errorf("issuer: too many credentials minted for this account: %w", ErrRateLimited)
)

// ParamError is a bad request parameter. Its message is shown to the caller.
type ParamError struct {
	Param   string
	Message string
}

func (e *ParamError) Error() string { return e.Message }

// Unwrap makes a ParamError match ErrInvalidParameter.
func (e *ParamError) Unwrap() error { return ErrInvalidParameter }

// Failed authentications allowed per client (IPv6 by /64): failRate a
// second, in bursts of failBurst. A client over it gets 429 until its bucket
// refills; successful requests never spend from it. failTableSize bounds the
// memory.
const (
	failRate      = rate.Limit(10)
	failBurst     = 20
	failTableSize = 10000
	// mintTableSize bounds the accounts whose minting rate is tracked.
	mintTableSize = 100000
)

// Token TTL bounds, as Twilio's.
const (
	DefaultTTL = 24 * time.Hour
	MinTTL     = time.Second
	MaxTTL     = 24 * time.Hour
)

// Options configure a Service.
type Options struct {
	// Store holds accounts and keys. Required.
	Store store.Store
	// Secrets returns the current TURN REST secret ring (it changes on
	// SIGHUP). Nil, or a nil ring, means tokens cannot be minted
	// (ErrNoSecret); account and key management still work.
	Secrets func() *auth.Secrets
	// URIs returns the ICE server URIs without credentials, computed by the
	// caller from the bound listeners (see DefaultURIs). Nil means none.
	URIs func() []string
	// RelayURIs, when set, replaces URIs: the URIs of the relays chosen for
	// a client (the zero Addr when the client is unknown), for a fleet.
	RelayURIs func(client netip.Addr) []string
	// TrustedProxies are reverse proxies whose X-Forwarded-For or
	// Forwarded header names the client (issuer.trusted_proxies).
	TrustedProxies []netip.Prefix
	// MaxTTL caps a token's ttl (auth.max_ttl: the relay refuses credentials
	// that expire later). A larger requested Ttl is lowered to it and the
	// answer's ttl says so. 0 means 24h.
	MaxTTL time.Duration
	// Log receives the service's logs; nil discards them.
	Log *zap.Logger
	// Registerer gets the issuer's metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CORSOrigins may call POST /v1/ice-servers from a browser: exact
	// origins ("https://app.example.com"), or "*" for any. Nil means none.
	CORSOrigins []string
	// TokensPerSecond bounds the credentials one account mints a second
	// (Tokens resource and /v1/ice-servers together), in bursts of
	// TokensBurst; 0 means unlimited.
	TokensPerSecond float64
	TokensBurst     int
	// Usage prices the Usage Records and bounds the live allocation list
	// (usage.go); zero values mean no price and a 30s bound.
	Usage UsageOptions
}

// Service is the issuer's logic, free of HTTP.
type Service struct {
	usage   UsageOptions
	store   store.Store
	secrets func() *auth.Secrets
	uris    func(client netip.Addr) []string
	proxies proxies
	maxTTL  time.Duration
	log     *zap.Logger
	now     func() time.Time
	metrics *metrics
	fails   *keyrate.Limiter[netip.Addr] // failed authentications per client source
	minting *keyrate.Limiter[string]     // credentials minted per AccountSid; nil: no limit
	// cors is swapped whole on reload (SetCORSOrigins).
	cors atomic.Pointer[corsPolicy]
}

// New builds a Service and registers its metrics.
func New(opts Options) (*Service, error) {
	if opts.Store == nil {
		return nil, errors.New("issuer: Options.Store is required")
	}
	s := &Service{
		store:   opts.Store,
		secrets: opts.Secrets,
		proxies: opts.TrustedProxies,
		maxTTL:  opts.MaxTTL,
		log:     opts.Log,
		now:     opts.Now,
		usage:   opts.Usage.withDefaults(),
	}
	if s.secrets == nil {
		s.secrets = func() *auth.Secrets { return nil }
	}
	switch {
	case opts.RelayURIs != nil:
		s.uris = opts.RelayURIs
	case opts.URIs != nil:
		s.uris = func(netip.Addr) []string { return opts.URIs() }
	default:
		s.uris = func(netip.Addr) []string { return nil }
	}
	if s.maxTTL <= 0 || s.maxTTL > MaxTTL {
		s.maxTTL = MaxTTL
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.fails = keyrate.New[netip.Addr](failRate, failBurst, failTableSize)
	if opts.TokensPerSecond > 0 {
		s.minting = keyrate.New[string](rate.Limit(opts.TokensPerSecond), max(opts.TokensBurst, 1), mintTableSize)
	}
	s.SetCORSOrigins(opts.CORSOrigins)
	return s, nil
}

// SetCORSOrigins replaces the origins that may call POST /v1/ice-servers from
// a browser (issuer.cors_origins), for a reload; requests already running
// finish with the old list.
func (s *Service) SetCORSOrigins(origins []string) {
	p := newCORSPolicy(origins)
	s.cors.Store(&p)
}

// Principal is who authenticated: an account with its auth token, or an API
// key acting for its account.
type Principal struct {
	// Account is the authenticated account (the key's account for a key).
	Account store.Account
	// KeySid is set when the caller used an API key.
	KeySid string
}

// Authentication failure reasons, the label values of
// traverse_issuer_auth_failures_total.
const (
	reasonMissing     = "missing"
	reasonUnknownSid  = "unknown_sid"
	reasonWrongSecret = "wrong_secret"
	reasonSuspended   = "suspended"
	reasonRateLimited = "rate_limited"
)

var authReasons = []string{reasonMissing, reasonUnknownSid, reasonWrongSecret, reasonSuspended, reasonRateLimited}

// authError is an authentication failure with the reason it is counted under.
type authError struct{ reason string }

func (e *authError) Error() string { return ErrUnauthenticated.Error() + ": " + e.reason }
func (e *authError) Unwrap() error { return ErrUnauthenticated }

// dummySecret is compared against when the SID is unknown, so an unknown SID
// costs the same comparison as a wrong secret.
var dummySecret = randomHex(16)

// Authenticate checks HTTP Basic credentials: an account SID with its auth
// token, or an API key SID with its secret. Keys are looked up in the store
// on every call (which caches only behind an exact check that the database
// is unchanged), so a deleted key or suspended account fails at once on
// every node sharing the store. Failures are ErrUnauthenticated, counted by
// reason.
func (s *Service) Authenticate(ctx context.Context, user, password string) (Principal, error) {
	p, err := s.authenticate(ctx, user, password)
	var ae *authError
	if errors.As(err, &ae) {
		s.metrics.authFailures.WithLabelValues(ae.reason).Inc()
		s.log.Debug("authentication failed", zap.String("reason", ae.reason), zap.String("sid", loggableSid(user)))
	}
	return p, err
}

func (s *Service) authenticate(ctx context.Context, user, password string) (Principal, error) {
	if user == "" || password == "" {
		return Principal{}, &authError{reasonMissing}
	}
	var (
		p      Principal
		secret string
		err    error
	)
	switch {
	case ValidSid(AccountSidPrefix, user):
		p.Account, err = s.store.GetAccount(ctx, user)
		secret = p.Account.AuthToken
	case ValidSid(KeySidPrefix, user):
		var k store.Key
		k, err = s.store.GetKey(ctx, user)
		if err == nil {
			p.KeySid, secret = k.Sid, k.Secret
			p.Account, err = s.store.GetAccount(ctx, k.AccountSid)
		}
	default:
		err = ErrNotFound
	}
	if errors.Is(err, ErrNotFound) {
		secretEqual(password, dummySecret)
		return Principal{}, &authError{reasonUnknownSid}
	}
	if err != nil {
		return Principal{}, err
	}
	if !secretEqual(password, secret) {
		return Principal{}, &authError{reasonWrongSecret}
	}
	active, err := accountActive(ctx, s.store, p.Account)
	if err != nil {
		return Principal{}, err
	}
	if !active {
		return Principal{}, &authError{reasonSuspended}
	}
	return p, nil
}

// accountActive reports whether a may act: it is active and, for a
// subaccount, so is its parent. Suspending an account suspends its
// subaccounts on every route, without touching their own status, so they
// come back with it.
func accountActive(ctx context.Context, st store.Store, a store.Account) (bool, error) {
	if a.Status != store.StatusActive {
		return false, nil
	}
	if a.ParentSid == "" {
		return true, nil
	}
	parent, err := st.GetAccount(ctx, a.ParentSid)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return parent.Status == store.StatusActive, nil
}

// secretEqual compares in constant time, over digests so that not even the
// length of the stored secret shows in the timing.
func secretEqual(given, stored string) bool {
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(stored))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// loggableSid returns user when it looks like a SID, else a placeholder: a
// password typed into the user field must not reach the logs.
func loggableSid(user string) string {
	if ValidSid(AccountSidPrefix, user) || ValidSid(KeySidPrefix, user) {
		return user
	}
	return "(not a SID)"
}

// Authorize returns the account p may act on as accountSid: its own, or, for
// an account authenticated with its auth token, one of its subaccounts. Any
// other SID, existing or not, is ErrNotFound; a suspended subaccount is
// ErrAccountNotActive.
func (s *Service) Authorize(ctx context.Context, p Principal, accountSid string) (store.Account, error) {
	if accountSid == p.Account.Sid {
		return p.Account, nil
	}
	if p.KeySid != "" || !ValidSid(AccountSidPrefix, accountSid) {
		return store.Account{}, ErrNotFound
	}
	a, err := s.store.GetAccount(ctx, accountSid)
	if err != nil {
		return store.Account{}, err
	}
	if a.ParentSid != p.Account.Sid {
		return store.Account{}, ErrNotFound
	}
	if a.Status != store.StatusActive {
		return store.Account{}, ErrAccountNotActive
	}
	return a, nil
}

// Token is a minted Network Traversal Service token.
type Token struct {
	AccountSid  string
	DateCreated time.Time
	DateUpdated time.Time
	ICEServers  []ICEServer
	Username    string
	Password    string
	TTL         time.Duration
}

// ParseTTL parses the Tokens resource's Ttl parameter: "" gives DefaultTTL,
// else an integer number of seconds from 1 to 86400; anything else is a
// *ParamError.
func ParseTTL(v string) (time.Duration, error) {
	if v == "" {
		return DefaultTTL, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || !allDigits(v) || n < int64(MinTTL/time.Second) || n > int64(MaxTTL/time.Second) {
		if len(v) > 32 {
			v = v[:32] + "…"
		}
		return 0, &ParamError{Param: "Ttl", Message: fmt.Sprintf(
			"Invalid Ttl: must be an integer number of seconds from %d to %d (got %q)",
			MinTTL/time.Second, MaxTTL/time.Second, v)}
	}
	return time.Duration(n) * time.Second, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// CreateToken mints a token for accountSid, which must exist and be active.
// The caller has already authorised the request.
func (s *Service) CreateToken(ctx context.Context, accountSid string, ttl time.Duration) (Token, error) {
	a, err := s.store.GetAccount(ctx, accountSid)
	if err != nil {
		return Token{}, err
	}
	if active, err := accountActive(ctx, s.store, a); err != nil {
		return Token{}, err
	} else if !active {
		return Token{}, ErrAccountNotActive
	}
	return s.issue(a.Sid, ttl, netip.Addr{})
}

// issue mints the TURN REST credential: user "<AccountSid>:<16 hex>", so the
// username is "<expiry>:<AccountSid>:<random>".
// client is the requester's address, for the choice of relays.
func (s *Service) issue(accountSid string, ttl time.Duration, client netip.Addr) (Token, error) {
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Second != 0 {
		return Token{}, &ParamError{Param: "Ttl", Message: fmt.Sprintf(
			"Invalid Ttl: must be a whole number of seconds from 1 to 86400 (got %s)", ttl)}
	}
	ttl = min(ttl, s.maxTTL)
	tok, err := s.mint(accountSid, accountSid+":"+randomHex(8), ttl, s.now().UTC().Truncate(time.Second), client)
	if err != nil {
		return Token{}, err
	}
	s.metrics.tokensIssued.Inc()
	return tok, nil
}

// mint makes the credential for user, valid ttl (already bounded) from now
// (whole seconds), and the Token around it, listing the relays chosen for
// client. Every minting route calls it.
func (s *Service) mint(accountSid, user string, ttl time.Duration, now time.Time, client netip.Addr) (Token, error) {
	ring := s.secrets()
	if ring == nil || ring.Len() == 0 {
		return Token{}, ErrNoSecret
	}
	if s.minting != nil && !s.minting.Allow(accountSid, now) {
		s.metrics.mintRateLimited.Inc()
		return Token{}, ErrMintRateLimited
	}
	cred, err := ring.Mint(user, ttl, now)
	if err != nil {
		return Token{}, fmt.Errorf("issuer: mint: %w", err)
	}
	return Token{
		AccountSid:  accountSid,
		DateCreated: now,
		DateUpdated: now,
		ICEServers:  ICEServers(s.uris(client), cred.Username, cred.Password),
		Username:    cred.Username,
		Password:    cred.Password,
		TTL:         ttl,
	}, nil
}
