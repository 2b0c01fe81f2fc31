package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/console/"

// maxBody bounds a request body: the sign-in form is the largest.
const maxBody = 4 << 10

// Handler serves the page and its API under Prefix. Every answer forbids
// framing and caching; the page's Content-Security-Policy allows nothing
// from outside this origin.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	files := http.StripPrefix(Prefix, http.FileServerFS(assets))
	mux.Handle("GET "+Prefix+"assets/", files)
	mux.HandleFunc("GET "+Prefix+"{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, assets, "assets/index.html")
	})
	mux.HandleFunc("POST "+Prefix+"api/signin", c.serveSignIn)
	mux.HandleFunc("GET "+Prefix+"api/session", c.authed(false, false, c.serveSession))
	mux.HandleFunc("POST "+Prefix+"api/signout", c.authed(true, false, c.serveSignOut))
	mux.HandleFunc("GET "+Prefix+"api/metrics", c.authed(false, true, c.serveMetrics))
	mux.HandleFunc("GET "+Prefix+"api/status", c.authed(false, true, c.serveStatus))
	mux.HandleFunc("GET "+Prefix+"api/sessions", c.authed(false, false, c.serveSessions))
	mux.HandleFunc("POST "+Prefix+"api/sessions/{id}/kill", c.authed(true, false, c.serveKill))
	mux.HandleFunc("GET "+Prefix+"api/usage", c.authed(false, false, c.serveUsage))
	mux.HandleFunc("POST "+Prefix+"api/ice-credential", c.authed(true, false, c.serveICECredential))
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such console page or endpoint")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; "+
			"style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusFound)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		mux.ServeHTTP(w, r)
	})
}

// authed wraps an API handler: a live session cookie is required; csrf
// requires the session's CSRF token too (every state-changing call);
// primary requires a top-level account.
func (c *Console) authed(csrf, primary bool, fn func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(cookieName)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "sign in first")
			return
		}
		s, ok := c.sessions.get(ck.Value)
		if !ok {
			setCookie(w, "", time.Time{})
			writeError(w, http.StatusUnauthorized, "your session has ended: sign in again")
			return
		}
		if err := c.opts.Auth.StillValid(r.Context(), s.ident); err != nil {
			if !errors.Is(err, ErrBadCredentials) {
				writeError(w, http.StatusServiceUnavailable, c.logged("session check", err))
				return
			}
			c.sessions.remove(ck.Value)
			setCookie(w, "", time.Time{})
			writeError(w, http.StatusUnauthorized, "your sign-in is no longer valid (account suspended, key deleted or token rotated): sign in again")
			return
		}
		if csrf && (!sameOrigin(r) || !validCSRF(r, s)) {
			writeError(w, http.StatusForbidden, "missing or wrong CSRF token")
			return
		}
		if primary && !s.ident.Primary {
			writeError(w, http.StatusForbidden, "server-wide status is for the primary account")
			return
		}
		setCookie(w, ck.Value, s.expires)
		fn(w, r, s)
	}
}

type sessionInfo struct {
	AccountSid   string    `json:"account_sid"`
	FriendlyName string    `json:"friendly_name"`
	KeySid       string    `json:"key_sid,omitempty"`
	Primary      bool      `json:"primary"`
	CSRFToken    string    `json:"csrf_token"`
	Expires      time.Time `json:"expires"`
	UsageReady   bool      `json:"usage_available"`
}

func (c *Console) info(s session) sessionInfo {
	return sessionInfo{
		AccountSid: s.ident.AccountSid, FriendlyName: s.ident.FriendlyName, KeySid: s.ident.KeySid,
		Primary: s.ident.Primary, CSRFToken: s.csrf, Expires: s.expires, UsageReady: c.opts.Usage != nil,
	}
}

func (c *Console) serveSignIn(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-site sign-in refused")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "send JSON")
		return
	}
	var in struct {
		Sid    string `json:"sid"`
		Secret string `json:"secret"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "malformed sign-in request")
		return
	}
	ip, now := clientIP(r), c.now()
	if c.limiter.blocked(ip, now) {
		writeError(w, http.StatusTooManyRequests, "too many failed sign-ins: wait a minute")
		return
	}
	ident, err := c.opts.Auth.SignIn(r.Context(), strings.TrimSpace(in.Sid), in.Secret)
	if err != nil {
		if errors.Is(err, ErrBadCredentials) {
			c.limiter.fail(ip, now)
			writeError(w, http.StatusUnauthorized, "wrong SID or secret, or the account is suspended")
			return
		}
		c.log.Error("sign-in", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "sign-in failed: see the server log")
		return
	}
	token, s := c.sessions.create(ident)
	setCookie(w, token, s.expires)
	c.log.Info("console sign-in", zap.String("account_sid", ident.AccountSid), zap.String("key_sid", ident.KeySid))
	writeJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) serveSession(w http.ResponseWriter, _ *http.Request, s session) {
	writeJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) serveSignOut(w http.ResponseWriter, r *http.Request, _ session) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.remove(ck.Value)
	}
	setCookie(w, "", time.Time{})
	writeJSON(w, http.StatusOK, map[string]bool{"signed_out": true})
}

func (c *Console) serveMetrics(w http.ResponseWriter, _ *http.Request, _ session) {
	writeJSON(w, http.StatusOK, chart(c.sampler.points(), c.sampler.every))
}

type status struct {
	Nodes        []Node        `json:"nodes"`
	NodesError   string        `json:"nodes_error,omitempty"`
	Certificates []Certificate `json:"certificates"`
	CertsError   string        `json:"certificates_error,omitempty"`
	Now          time.Time     `json:"now"`
}

func (c *Console) serveStatus(w http.ResponseWriter, r *http.Request, _ session) {
	st := status{Nodes: []Node{}, Certificates: []Certificate{}, Now: c.now()}
	if c.opts.Nodes != nil {
		if n, err := c.opts.Nodes.Nodes(r.Context()); err != nil {
			st.NodesError = c.logged("nodes", err)
		} else {
			st.Nodes = n
		}
	}
	if c.opts.Certificates != nil {
		if cs, err := c.opts.Certificates.Certificates(r.Context()); err != nil {
			st.CertsError = c.logged("certificates", err)
		} else {
			st.Certificates = cs
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// visible filters what s may see: a subaccount its own account's rows only.
func visible[T any](s session, rows []T, account func(T) string) []T {
	if s.ident.Primary {
		return rows
	}
	return slices.DeleteFunc(rows, func(row T) bool { return account(row) != s.ident.AccountSid })
}

func (c *Console) visibleSessions(ctx context.Context, s session) ([]Session, error) {
	list, err := c.opts.Sessions.List(ctx)
	if err != nil {
		return nil, err
	}
	return visible(s, list, func(x Session) string { return x.Account }), nil
}

func (c *Console) serveSessions(w http.ResponseWriter, r *http.Request, s session) {
	list, err := c.visibleSessions(r.Context(), s)
	if err != nil {
		writeError(w, http.StatusInternalServerError, c.logged("sessions", err))
		return
	}
	if list == nil {
		list = []Session{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": list})
}

func (c *Console) serveKill(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	list, err := c.visibleSessions(r.Context(), s)
	if err != nil {
		writeError(w, http.StatusInternalServerError, c.logged("sessions", err))
		return
	}
	// Only a session the caller can see can be killed: for a subaccount,
	// another account's session is "not found", as if it did not exist.
	if !slices.ContainsFunc(list, func(x Session) bool { return x.ID == id }) {
		writeError(w, http.StatusNotFound, "no such live session")
		return
	}
	if err := c.opts.Sessions.Kill(r.Context(), id); err != nil {
		if errors.Is(err, ErrNotFound) {
			writeError(w, http.StatusNotFound, "no such live session")
			return
		}
		writeError(w, http.StatusInternalServerError, c.logged("kill", err))
		return
	}
	c.log.Info("console killed a session", zap.String("id", id), zap.String("by", s.ident.AccountSid))
	writeJSON(w, http.StatusOK, map[string]string{"killed": id})
}

func (c *Console) serveUsage(w http.ResponseWriter, r *http.Request, s session) {
	if c.opts.Usage == nil {
		writeJSON(w, http.StatusOK, map[string]any{"available": false, "days": []UsageDay{}})
		return
	}
	rows, err := c.opts.Usage.Usage(r.Context(), 30)
	if err != nil {
		writeError(w, http.StatusInternalServerError, c.logged("usage", err))
		return
	}
	rows = visible(s, rows, func(u UsageDay) string { return u.Account })
	writeJSON(w, http.StatusOK, map[string]any{"available": true, "days": rows})
}

type iceCredential struct {
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
	URIs       []string `json:"uris"`
	TTL        int      `json:"ttl"`
}

// serveICECredential mints a short TURN credential for the signed-in
// account, for the ICE tester. It is a POST with the CSRF token: it creates
// something, and another site must not make the page do it.
func (c *Console) serveICECredential(w http.ResponseWriter, r *http.Request, s session) {
	cred, err := c.opts.Minter.Mint(r.Context(), s.ident.AccountSid, iceCredentialTTL)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, c.logged("mint", err))
		return
	}
	writeJSON(w, http.StatusOK, iceCredential{
		Username: cred.Username, Credential: cred.Password, URIs: cred.URIs, TTL: int(cred.TTL / time.Second),
	})
}

// logged logs err and returns what the page may show: the error's text. No
// adapter puts a secret in an error.
func (c *Console) logged(what string, err error) string {
	c.log.Warn("console: "+what, zap.Error(err))
	return what + ": " + err.Error()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
