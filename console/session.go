package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// cookieName is the session cookie. It is scoped to /console/ so the
// Twilio-compatible API on the same listener never sees it.
const cookieName = "traverse_console"

// csrfHeader carries the session's CSRF token on every state-changing call.
const csrfHeader = "X-CSRF-Token"

// maxSessions bounds the store; the oldest sign-ins go first beyond it.
const maxSessions = 10_000

// session is one sign-in. The store keys it by the SHA-256 of the cookie
// value, so the map never holds what a request must present.
type session struct {
	ident   Identity
	csrf    string
	created time.Time
	expires time.Time
}

type sessionStore struct {
	mu     sync.Mutex
	m      map[[32]byte]*session
	ttl    time.Duration
	maxAge time.Duration
	now    func() time.Time
}

func newSessionStore(ttl, maxAge time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{m: map[[32]byte]*session{}, ttl: ttl, maxAge: maxAge, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns the cookie value and the session.
func (st *sessionStore) create(ident Identity) (string, session) {
	token := randomToken()
	now := st.now()
	s := &session{ident: ident, csrf: randomToken(), created: now, expires: now.Add(st.ttl)}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.m) >= maxSessions {
		st.pruneLocked(now)
	}
	st.m[sha256.Sum256([]byte(token))] = s
	return token, *s
}

// pruneLocked drops expired sessions, then, if still full, the oldest.
func (st *sessionStore) pruneLocked(now time.Time) {
	var oldestKey [32]byte
	var oldest time.Time
	for k, s := range st.m {
		if !now.Before(s.expires) {
			delete(st.m, k)
			continue
		}
		if oldest.IsZero() || s.created.Before(oldest) {
			oldest, oldestKey = s.created, k
		}
	}
	if len(st.m) >= maxSessions {
		delete(st.m, oldestKey)
	}
}

// get returns the live session of token and renews it.
func (st *sessionStore) get(token string) (session, bool) {
	if token == "" {
		return session{}, false
	}
	key := sha256.Sum256([]byte(token))
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[key]
	if !ok {
		return session{}, false
	}
	if !now.Before(s.expires) {
		delete(st.m, key)
		return session{}, false
	}
	s.expires = now.Add(st.ttl)
	if limit := s.created.Add(st.maxAge); s.expires.After(limit) {
		s.expires = limit
	}
	return *s, true
}

func (st *sessionStore) remove(token string) {
	st.mu.Lock()
	delete(st.m, sha256.Sum256([]byte(token)))
	st.mu.Unlock()
}

// setCookie sends the session cookie: HttpOnly (no script reads it), Secure
// (browsers keep it off plain HTTP except on localhost), SameSite=Strict (no
// other site's page sends it).
func setCookie(w http.ResponseWriter, value string, expires time.Time) {
	c := &http.Cookie{
		Name: cookieName, Value: value, Path: "/console/",
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		// The cookie ends with the session; each request renews both.
		c.Expires = expires
	}
	http.SetCookie(w, c)
}

// validCSRF compares the request's CSRF header to the session's token.
func validCSRF(r *http.Request, s session) bool {
	got := r.Header.Get(csrfHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sameOrigin refuses requests a browser marks as coming from another site,
// and any whose Origin header names another host: the sign-in has no CSRF
// token yet, so this (with the JSON body) is what protects it.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		return o == "https://"+r.Host || o == "http://"+r.Host
	}
	return true
}

// signInLimiter slows password guessing: each client address may fail a
// sign-in signInBurst times, then once per signInEvery.
type signInLimiter struct {
	mu sync.Mutex
	m  map[netip.Addr]*rate.Limiter
}

const (
	signInBurst   = 10
	signInEvery   = 3 * time.Second
	signInClients = 4096
)

func newSignInLimiter() *signInLimiter { return &signInLimiter{m: map[netip.Addr]*rate.Limiter{}} }

func (l *signInLimiter) get(ip netip.Addr) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[ip]
	if !ok {
		if len(l.m) >= signInClients {
			clear(l.m) // forgetting is safe: it only forgives old failures
		}
		lim = rate.NewLimiter(rate.Every(signInEvery), signInBurst)
		l.m[ip] = lim
	}
	return lim
}

// blocked reports whether ip has used up its failures.
func (l *signInLimiter) blocked(ip netip.Addr, now time.Time) bool {
	return l.get(ip).TokensAt(now) < 1
}

// fail counts a failed sign-in from ip.
func (l *signInLimiter) fail(ip netip.Addr, now time.Time) { l.get(ip).AllowN(now, 1) }

func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
