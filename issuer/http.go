package issuer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/keyrate"
)

// MaxBodyBytes is the largest request body accepted; a larger one gets 413.
const MaxBodyBytes = 64 << 10

// Twilio error codes the issuer answers with. Twilio documents no code for a
// bad parameter of the Tokens resource; traverse uses 20001 for every 400
// (bad Ttl, FriendlyName, Page, PageSize, or a body that is not valid form
// encoding) and 20413 for a body over MaxBodyBytes. Keep them stable: clients
// may switch on them.
const (
	CodeInvalidParameter = 20001
	CodeAuthenticate     = 20003
	CodeMethodNotAllowed = 20004
	CodeAccountNotActive = 20005
	CodeForbidden        = 20006
	CodeNotFound         = 20404
	CodeBodyTooLarge     = 20413
	CodeTooManyRequests  = 20429
	CodeInternal         = 20500
)

// apiError is Twilio's error JSON. No "type" or "title": twilio-node would
// take such a body for RFC 9457 and throw another exception class.
type apiError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

// Errors of the HTTP layer itself.
var (
	errBodyTooLarge   = errors.New("request body too large")
	errMalformedBody  = errors.New("malformed form encoding")
	errMethodNotAllow = errors.New("method not allowed")
)

// NewHTTPServer returns an *http.Server for the issuer's handler with the
// timeouts it needs against slow clients: 5s to read the headers, 10s for the
// whole request and for the answer, 60s idle, 16 KiB of headers. The caller
// sets TLSConfig when serving HTTPS.
func NewHTTPServer(addr string, h http.Handler, log *zap.Logger) *http.Server {
	if log == nil {
		log = zap.NewNop()
	}
	stdLog, _ := zap.NewStdLogAt(log.Named("http"), zap.DebugLevel)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdLog,
	}
}

// Handler serves Twilio's REST routes:
//
//	POST   /2010-04-01/Accounts/{AccountSid}/Tokens[.json]        mint a token (Ttl)
//	POST   /2010-04-01/Accounts/{AccountSid}/Keys[.json]          create an API key (FriendlyName)
//	GET    /2010-04-01/Accounts/{AccountSid}/Keys[.json]          list API keys (Page, PageSize)
//	GET    /2010-04-01/Accounts/{AccountSid}/Keys/{KeySid}[.json] fetch an API key
//	DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{KeySid}[.json] delete an API key (204)
//	POST   /2010-04-01/Accounts[.json]                            create a subaccount (FriendlyName)
//	POST   /v1/ice-servers                                        mint a token for a browser (Ttl)
//	GET    /2010-04-01/Accounts/{AccountSid}/Usage/Records[/{Sub}][.json] TURN usage records (usage.go)
//	GET    /v1/Accounts/{AccountSid}/Allocations[.json]           live allocations on every node
//	DELETE /v1/Accounts/{AccountSid}/Allocations/{Sid}[.json]     tear one down (204)
//	POST   /v1/Accounts/{AccountSid}/Credentials/{Username}/revoke revoke a TURN username (204)
//
// Usage and live control take an API key as Tokens does.
// All but the last authenticate with HTTP Basic: AccountSid:AuthToken, or
// KeySid:KeySecret on Tokens only (403 elsewhere, as Twilio's standard keys).
// An account's auth token also acts on its subaccounts. /v1/ice-servers takes
// an Access Token or Capability Token instead and answers CORS (see
// serveICEServers). Errors are Twilio's JSON; any other path is 404.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(route string, fn func(http.ResponseWriter, *http.Request) error, methods string, paths ...string) {
		h := s.route(route, methods, fn)
		for _, p := range paths {
			mux.Handle(p, h)
		}
	}
	const acct = "/2010-04-01/Accounts/{AccountSid}"
	handle("tokens", s.serveTokens, "POST", acct+"/Tokens.json", acct+"/Tokens")
	handle("keys", s.serveKeys, "GET, POST", acct+"/Keys.json", acct+"/Keys")
	handle("key", s.serveKey, "GET, DELETE", acct+"/Keys/{KeySid}")
	handle("accounts", s.serveAccounts, "POST", "/2010-04-01/Accounts.json", "/2010-04-01/Accounts")
	handle("usage_records", s.serveUsage, "GET", acct+"/Usage/Records.json", acct+"/Usage/Records", acct+"/Usage/Records/{Sub}")
	const v1acct = "/v1/Accounts/{AccountSid}"
	handle("allocations", s.serveAllocations, "GET", v1acct+"/Allocations.json", v1acct+"/Allocations")
	handle("allocation", s.serveAllocation, "DELETE", v1acct+"/Allocations/{Sid}")
	handle("revoke", s.serveRevoke, "POST", v1acct+"/Credentials/{Username}/revoke")
	// Methods and CORS preflight are checked by the handler, so that CORS
	// headers reach a page on every answer.
	handle("ice_servers", s.serveICEServers, "", ICEServersPath)
	other := s.route("other", "", func(http.ResponseWriter, *http.Request) error { return ErrNotFound })
	mux.Handle("/", other)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux would redirect an unclean path (".." or "//"); Twilio's
		// clients get a 404 in Twilio's JSON instead.
		if p := r.URL.Path; p == "" || path.Clean(p) != p {
			other.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// route wraps a handler: body limit, method check (methods "" allows any),
// error answers, request metrics.
func (s *Service) route(name, methods string, fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	allowed := strings.Split(methods, ", ")
	requests := s.metrics.routeRequests(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Given the server's own writer, MaxBytesReader also closes the
		// connection after a too-large body.
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		sw := &statusWriter{ResponseWriter: w}
		var err error
		if methods != "" && !slices.Contains(allowed, r.Method) {
			w.Header().Set("Allow", methods)
			err = errMethodNotAllow
		} else {
			err = fn(sw, r)
		}
		if err != nil {
			s.writeError(sw, r, err)
		}
		requests.inc(sw.status)
	})
}

// statusWriter records the status code for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// authorize authenticates the request (Basic auth, rate-limited per client
// on failures) and returns the account named by {AccountSid} that the caller
// may act on.
func (s *Service) authorize(r *http.Request) (Principal, error) {
	ip := s.clientAddr(r)
	now := s.now()
	if s.fails.Blocked(keyrate.Source(ip), now) {
		s.metrics.authFailures.WithLabelValues(reasonRateLimited).Inc()
		return Principal{}, ErrRateLimited
	}
	user, pass, _ := r.BasicAuth()
	p, err := s.Authenticate(r.Context(), user, pass)
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			s.fails.Spend(keyrate.Source(ip), now)
		}
		return Principal{}, err
	}
	if sid := r.PathValue("AccountSid"); sid != "" {
		a, err := s.Authorize(r.Context(), p, sid)
		if err != nil {
			return Principal{}, err
		}
		// The principal now acts on the account in the path.
		p.Account = a
	}
	return p, nil
}

// authorizeManager authenticates a request to the Keys and Accounts
// resources and reads its form. API keys are refused there, as Twilio
// refuses standard keys, so a leaked key cannot mint more keys.
func (s *Service) authorizeManager(r *http.Request) (Principal, error) {
	p, err := s.authorize(r)
	if err != nil {
		return p, err
	}
	if p.KeySid != "" {
		return p, fmt.Errorf("%w: API keys cannot manage keys or accounts; use the auth token", ErrForbidden)
	}
	return p, parseForm(r)
}

// parseForm reads the form-encoded body (route has limited it to MaxBodyBytes)
// and the query into r.Form; body values come first.
func parseForm(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge
		}
		return errMalformedBody
	}
	return nil
}

// formTTL reads the request's form and its Ttl parameter (default 24 h),
// for both routes that mint credentials.
func formTTL(r *http.Request) (time.Duration, error) {
	v, ok, err := plainFormValue(r, "Ttl")
	if err != nil {
		return 0, err
	}
	if !ok {
		if err := parseForm(r); err != nil {
			return 0, err
		}
		v = r.Form.Get("Ttl")
	}
	return ParseTTL(v)
}

// maxPlainBody is the largest body plainFormValue reads itself.
const maxPlainBody = 512

// plainFormValue is r.Form.Get(key) after parseForm without url.ParseQuery's
// maps and copies, for the form every client sends: a POST with no query
// string, Content-Type exactly application/x-www-form-urlencoded, and a short
// body of characters that need no unescaping (letters, digits, "-._~", and
// the "=" and "&" around them). For anything else it reports !ok and puts
// back what it read, so parseForm decides exactly as before. Read errors are
// parseForm's.
func plainFormValue(r *http.Request, key string) (v string, ok bool, err error) {
	if r.Method != http.MethodPost || r.URL.RawQuery != "" || r.Form != nil || r.Body == nil {
		return "", false, nil
	}
	if ct := r.Header["Content-Type"]; len(ct) != 1 || ct[0] != "application/x-www-form-urlencoded" {
		return "", false, nil
	}
	bp := getBuf()
	defer putBuf(bp)
	buf := (*bp)[:maxPlainBody]
	n := 0
	for n < len(buf) {
		m, err := r.Body.Read(buf[n:])
		n += m
		if err == io.EOF {
			return scanPlainForm(r, buf[:n], key)
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return "", false, errBodyTooLarge
			}
			return "", false, errMalformedBody
		}
	}
	// Longer than maxPlainBody: parseForm reads it all.
	putBack(r, buf[:n])
	return "", false, nil
}

// scanPlainForm finds key in a complete body, or puts the body back when it
// holds anything that parseForm would unescape or refuse.
func scanPlainForm(r *http.Request, body []byte, key string) (string, bool, error) {
	for _, c := range body {
		if !plainFormByte(c) {
			putBack(r, body)
			return "", false, nil
		}
	}
	var v []byte
	found := false
	for rest := body; len(rest) > 0 && !found; {
		var pair []byte
		pair, rest, _ = bytes.Cut(rest, []byte("&"))
		k, val, _ := bytes.Cut(pair, []byte("="))
		if string(k) == key {
			v, found = val, true
		}
	}
	return string(v), true, nil
}

func plainFormByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '=' || c == '&'
}

// putBack makes r.Body read read first, then the rest of the body.
func putBack(r *http.Request, read []byte) {
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(bytes.Clone(read)), r.Body), r.Body}
}

func (s *Service) serveTokens(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorize(r)
	if err != nil {
		return err
	}
	ttl, err := formTTL(r)
	if err != nil {
		return err
	}
	tok, err := s.issue(p.Account.Sid, ttl, s.clientAddr(r))
	if err != nil {
		return err
	}
	return writeToken(w, tok)
}

func (s *Service) serveKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorizeManager(r)
	if err != nil {
		return err
	}
	if r.Method == http.MethodPost {
		k, err := s.CreateKey(r.Context(), p.Account.Sid, r.Form.Get("FriendlyName"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusCreated, NewKeyResource(k, true))
	}
	page, size, err := ParsePaging(r.Form.Get("Page"), r.Form.Get("PageSize"))
	if err != nil {
		return err
	}
	keys, err := s.Keys(r.Context(), p.Account.Sid)
	if err != nil {
		return err
	}
	path := "/2010-04-01/Accounts/" + p.Account.Sid + "/Keys.json"
	return writeJSON(w, http.StatusOK, NewKeyList(keys, path, page, size))
}

func (s *Service) serveKey(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorizeManager(r)
	if err != nil {
		return err
	}
	keySid := strings.TrimSuffix(r.PathValue("KeySid"), ".json")
	if r.Method == http.MethodDelete {
		if err := s.DeleteKey(r.Context(), p.Account.Sid, keySid); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	k, err := s.Key(r.Context(), p.Account.Sid, keySid)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, NewKeyResource(k, false))
}

func (s *Service) serveAccounts(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authorizeManager(r)
	if err != nil {
		return err
	}
	a, err := s.CreateAccount(r.Context(), r.Form.Get("FriendlyName"), p.Account.Sid)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, NewAccountResource(a, true))
}

// writeJSON answers v as JSON, "&" unescaped in URIs as Twilio writes them.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	bp := getBuf()
	defer putBuf(bp)
	buf := bytes.NewBuffer((*bp)[:0])
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	*bp = buf.Bytes()
	writeBody(w, status, *bp)
	return nil
}

// writeToken answers a minted token: writeJSON(w, 201, tok.Resource()),
// encoded without reflection (tokenjson.go).
func writeToken(w http.ResponseWriter, tok Token) error {
	bp := getBuf()
	defer putBuf(bp)
	*bp = appendTokenJSON((*bp)[:0], tok)
	writeBody(w, http.StatusCreated, *bp)
	return nil
}

// contentTypeJSON is the Content-Type header's value, shared by every
// answer (a header value slice is never modified in place).
var contentTypeJSON = []string{"application/json"}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body)
}

// bufPool holds the buffers answers are encoded in and small bodies read
// in; Write copies, so a buffer is free again once written.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		bufPool.Put(b)
	}
}

// writeError is the one place an error becomes an answer: Twilio's error JSON
// with the matching status. Unknown errors are logged and answered 500
// without detail.
func (s *Service) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		status int
		code   int
		msg    string
		pe     *ParamError
		te     *auth.TokenError
	)
	switch {
	case errors.As(err, &te):
		// First: a token refusal may wrap ErrNotFound or ErrAccountNotActive
		// from the key lookup, and is a 401 whatever its cause.
		status, code, msg = http.StatusUnauthorized, te.Code, te.Message
		if errors.Is(err, errNoToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="traverse"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="traverse", error="invalid_token"`)
		}
	case errors.Is(err, ErrUnauthenticated):
		status, code, msg = http.StatusUnauthorized, CodeAuthenticate, "Authenticate"
		w.Header().Set("WWW-Authenticate", `Basic realm="traverse"`)
	case errors.Is(err, ErrNotFound):
		status, code, msg = http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found"
	case errors.As(err, &pe):
		status, code, msg = http.StatusBadRequest, CodeInvalidParameter, pe.Message
	case errors.Is(err, errMalformedBody):
		status, code, msg = http.StatusBadRequest, CodeInvalidParameter, "Malformed request: the body or query is not valid application/x-www-form-urlencoded"
	case errors.Is(err, errBodyTooLarge):
		status, code, msg = http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "Request body larger than 65536 bytes"
	case errors.Is(err, errMethodNotAllow):
		status, code, msg = http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed"
	case errors.Is(err, ErrRateLimited):
		status, code, msg = http.StatusTooManyRequests, CodeTooManyRequests, "Too Many Requests"
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, ErrAccountNotActive):
		status, code, msg = http.StatusForbidden, CodeAccountNotActive, "Account is not active"
	case errors.Is(err, ErrForbidden):
		status, code, msg = http.StatusForbidden, CodeForbidden, "Access Denied"
	default:
		status, code, msg = http.StatusInternalServerError, CodeInternal, "Internal Server Error"
		s.log.Error("request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Stringer("client", s.clientAddr(r)), zap.Error(err))
	}
	if status < 500 {
		s.log.Debug("request refused", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", status), zap.Stringer("client", s.clientAddr(r)))
	}
	writeJSON(w, status, apiError{
		Code:     code,
		Message:  msg,
		MoreInfo: "https://www.twilio.com/docs/errors/" + strconv.Itoa(code),
		Status:   status,
	})
}
