// Package console is traverse's operator console: a web page embedded in the
// binary, served at /console/ on the issuer's listener, and the small JSON
// endpoints behind it. An account signs in with its SID and auth token (or an
// API key) and gets a short-lived HttpOnly session cookie; every
// state-changing call also carries the session's CSRF token.
//
// The package imports neither the relay nor the issuer: it defines the few
// interfaces it needs (Authenticator, Sessions, Nodes, Certificates, Usage,
// TokenMinter, and a prometheus.Gatherer for the charts) and package server
// adapts the real services to them.
package console

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Identity is who signed in.
type Identity struct {
	AccountSid   string
	FriendlyName string
	// KeySid is set when the sign-in used an API key.
	KeySid string
	// Primary is a top-level account: it sees every session on the node and
	// the server-wide status. A subaccount sees only its own sessions.
	Primary bool
	// Proof is the Authenticator's own, opaque record of the credential
	// used (a digest, never the secret), for StillValid. It never reaches
	// the page.
	Proof string
}

// Authenticator checks sign-in credentials: an account SID with its auth
// token, or an API key SID with its secret. A wrong or unknown pair is
// ErrBadCredentials.
type Authenticator interface {
	SignIn(ctx context.Context, sid, secret string) (Identity, error)
	// StillValid reports ErrBadCredentials when what signed in no longer
	// would: the account was suspended, the key deleted, the token rotated.
	// The console asks on every request, so a session ends with its credential.
	StillValid(ctx context.Context, id Identity) error
}

// Errors the adapters return.
var (
	// ErrBadCredentials: the sign-in SID and secret do not match an active account or key.
	ErrBadCredentials = errors.New("console: wrong SID or secret")
	// ErrNotFound: no such session (or not the caller's).
	ErrNotFound = errors.New("console: not found")
)

// Session is one live allocation.
type Session struct {
	ID string `json:"id"`
	// Account is the AccountSid the credential was minted for; empty for
	// static users.
	Account   string    `json:"account"`
	Username  string    `json:"username"`
	Transport string    `json:"transport"`
	Client    string    `json:"client"`
	Relayed   string    `json:"relayed"`
	Node      string    `json:"node"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires,omitzero"`
}

// Sessions lists and ends live allocations.
type Sessions interface {
	List(ctx context.Context) ([]Session, error)
	// Kill ends the session id; ErrNotFound when it is not live.
	Kill(ctx context.Context, id string) error
}

// Node is one relay node and its port use.
type Node struct {
	Name        string    `json:"name"`
	Addr        string    `json:"addr"`
	Healthy     bool      `json:"healthy"`
	Allocations int       `json:"allocations"`
	PortsUsed   int       `json:"ports_used"`
	PortsTotal  int       `json:"ports_total"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// Nodes lists the relay nodes (this one alone until a fleet exists).
type Nodes interface {
	Nodes(ctx context.Context) ([]Node, error)
}

// Certificate is a serving certificate.
type Certificate struct {
	Subject   string    `json:"subject"`
	Names     []string  `json:"names"`
	Issuer    string    `json:"issuer"`
	Source    string    `json:"source"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// Certificates lists the serving certificates; none when TLS is off.
type Certificates interface {
	Certificates(ctx context.Context) ([]Certificate, error)
}

// UsageDay is one account's use of the relay on one UTC day.
type UsageDay struct {
	Day           string  `json:"day"` // YYYY-MM-DD
	Account       string  `json:"account"`
	Allocations   int64   `json:"allocations"`
	BytesToPeer   int64   `json:"bytes_to_peer"`
	BytesFromPeer int64   `json:"bytes_from_peer"`
	Minutes       float64 `json:"minutes"`
}

// Usage reads per-day usage from the last days days, every account's.
type Usage interface {
	Usage(ctx context.Context, days int) ([]UsageDay, error)
}

// Credential is a short TURN credential for the ICE tester.
type Credential struct {
	Username string
	Password string
	URIs     []string
	TTL      time.Duration
}

// TokenMinter mints a TURN credential for an account.
type TokenMinter interface {
	Mint(ctx context.Context, accountSid string, ttl time.Duration) (Credential, error)
}

// Options configure a Console. Auth, Sessions and Minter are required.
type Options struct {
	Auth     Authenticator
	Sessions Sessions
	Minter   TokenMinter
	// Metrics is sampled for the charts: the registry behind /metrics.
	Metrics prometheus.Gatherer
	// Nodes, Certificates and Usage may be nil: the page says "not available".
	Nodes        Nodes
	Certificates Certificates
	Usage        Usage
	// SessionTTL is the idle lifetime of a sign-in; 0 means 15 minutes.
	SessionTTL time.Duration
	// SampleEvery is the chart resolution; 0 means 5 s. The charts keep an hour.
	SampleEvery time.Duration
	Log         *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Console is the running console: its sessions and its metrics sampler.
type Console struct {
	opts     Options
	log      *zap.Logger
	now      func() time.Time
	sessions *sessionStore
	limiter  *signInLimiter
	sampler  *sampler
	stop     context.CancelFunc
	done     chan struct{}
}

// Sign-in lifetimes.
const (
	DefaultSessionTTL = 15 * time.Minute
	// MaxSessionAge bounds a session however active it is.
	MaxSessionAge = 12 * time.Hour
	// iceCredentialTTL is the lifetime of the ICE tester's credential.
	iceCredentialTTL = 10 * time.Minute
)

// New builds a Console and starts sampling Metrics; Close stops it.
func New(opts Options) (*Console, error) {
	if opts.Auth == nil || opts.Sessions == nil || opts.Minter == nil {
		return nil, errors.New("console: Options.Auth, Sessions and Minter are required")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.SampleEvery <= 0 {
		opts.SampleEvery = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Console{
		opts:     opts,
		log:      opts.Log,
		now:      opts.Now,
		sessions: newSessionStore(opts.SessionTTL, MaxSessionAge, opts.Now),
		limiter:  newSignInLimiter(),
		sampler:  newSampler(opts.Metrics, opts.SampleEvery, time.Hour, opts.Now),
		done:     make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go func() {
		defer close(c.done)
		c.sampler.run(ctx)
	}()
	return c, nil
}

// Close stops the sampler.
func (c *Console) Close() {
	c.stop()
	<-c.done
}
