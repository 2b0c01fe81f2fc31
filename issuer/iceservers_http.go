package issuer

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/keyrate"
)

// ICEServersPath is the client-side ICE-servers endpoint.
const ICEServersPath = "/v1/ice-servers"

// CORS answers of ICEServersPath.
const (
	corsAllowMethods = "POST, OPTIONS"
	corsAllowHeaders = "Authorization, X-Twilio-Token, Content-Type"
	corsMaxAge       = "600"
)

// corsPolicy is the set of origins that may call ICEServersPath from a browser.
type corsPolicy struct {
	any     bool
	origins map[string]bool
}

// newCORSPolicy reads issuer.cors_origins: exact origins, or "*" for any. A
// trailing "/" in the config is ignored (browsers never send one).
func newCORSPolicy(origins []string) corsPolicy {
	p := corsPolicy{origins: make(map[string]bool, len(origins))}
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		p.origins[strings.TrimSuffix(o, "/")] = true
	}
	return p
}

// allows reports whether a request with this Origin header may read the answer.
func (p corsPolicy) allows(origin string) bool {
	return origin != "" && (p.any || p.origins[origin])
}

// serveICEServers is POST /v1/ice-servers: authenticate the bearer token,
// read Ttl, mint, answer the Tokens resource's JSON (201). OPTIONS is the
// CORS preflight; any other method is 405. CORS headers go on every answer,
// errors included, so that a page can read why it was refused.
func (s *Service) serveICEServers(w http.ResponseWriter, r *http.Request) error {
	origin := r.Header.Get("Origin")
	allowed := s.cors.Load().allows(origin)
	h := w.Header()
	// The answer depends on Origin whatever it is, so caches must key on it.
	h.Add("Vary", "Origin")
	if allowed {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		h.Set("Allow", corsAllowMethods)
		if origin == "" {
			// Not a CORS preflight: just say what the route allows.
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		if !allowed {
			return fmt.Errorf("%w: origin not allowed (issuer.cors_origins)", ErrForbidden)
		}
		h.Set("Access-Control-Allow-Methods", corsAllowMethods)
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", corsMaxAge)
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		h.Set("Allow", corsAllowMethods)
		return errMethodNotAllow
	}
	p, err := s.authorizeToken(r)
	if err != nil {
		return err
	}
	ttl, err := formTTL(r)
	if err != nil {
		return err
	}
	tok, err := s.CreateICEServers(p, ttl)
	if err != nil {
		return err
	}
	h.Set("Cache-Control", "no-store")
	return writeToken(w, tok)
}

// authorizeToken authenticates the token the request presents, rate-limited
// per client on failures like Basic auth.
func (s *Service) authorizeToken(r *http.Request) (TokenPrincipal, error) {
	ip := s.clientAddr(r)
	now := s.now()
	if s.fails.Blocked(keyrate.Source(ip), now) {
		s.metrics.authFailures.WithLabelValues(reasonRateLimited).Inc()
		return TokenPrincipal{}, ErrRateLimited
	}
	p, err := s.AuthenticateToken(r.Context(), presentedToken(r))
	if err != nil {
		if auth.CodeOf(err) != 0 {
			s.fails.Spend(keyrate.Source(ip), now)
		}
		return TokenPrincipal{}, err
	}
	p.Client = ip
	return p, nil
}

// presentedToken is the token of "Authorization: Bearer <token>" (scheme
// case-insensitive), else of "X-Twilio-Token: <token>"; "" when neither.
func presentedToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(tok)
	}
	return strings.TrimSpace(r.Header.Get("X-Twilio-Token"))
}
