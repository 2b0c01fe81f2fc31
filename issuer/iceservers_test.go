package issuer_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	twjwt "github.com/twilio/twilio-go/client/jwt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
)

const (
	appOrigin     = "https://app.example.com"
	foreignOrigin = "https://evil.example.net"
)

// newICEFixture is a fixture whose issuer allows the given CORS origins: the
// same store and account, a fresh Service, registry and logs.
func newICEFixture(t testing.TB, origins ...string) *fixture {
	t.Helper()
	f := newFixture(t)
	f.restart(t, func(o *issuer.Options) { o.CORSOrigins = origins })
	return f
}

// restart replaces the fixture's service (same store and clock, fresh
// metrics and logs) with one built from options changed by mod.
func (f *fixture) restart(t testing.TB, mod func(*issuer.Options)) {
	t.Helper()
	f.srv.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	f.reg = prometheus.NewRegistry()
	opts := issuer.Options{
		Store:      f.store,
		Secrets:    func() *auth.Secrets { return f.secrets },
		URIs:       func() []string { return testURIs },
		Log:        zap.New(core),
		Registerer: f.reg,
		Now:        f.clock.Now,
	}
	mod(&opts)
	var err error
	if f.svc, err = issuer.New(opts); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.svc.Handler())
}

// setNow sets the fixture's clock (twilio-go stamps its tokens with time.Now).
func (f *fixture) setNow(now time.Time) {
	f.clock.mu.Lock()
	f.clock.now = now
	f.clock.mu.Unlock()
}

// iceReq is one request to /v1/ice-servers.
type iceReq struct {
	method  string // POST when empty
	query   string // without "?"
	bearer  string // Authorization: Bearer <bearer>
	xtoken  string // X-Twilio-Token
	authz   string // a raw Authorization header
	origin  string
	form    string
	headers map[string]string
}

func (f *fixture) ice(t testing.TB, q iceReq) response {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodPost
	}
	var body io.Reader
	if q.form != "" {
		body = strings.NewReader(q.form)
	}
	u := f.srv.URL + issuer.ICEServersPath
	if q.query != "" {
		u += "?" + q.query
	}
	req, err := http.NewRequest(q.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if q.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+q.bearer)
	}
	if q.authz != "" {
		req.Header.Set("Authorization", q.authz)
	}
	if q.xtoken != "" {
		req.Header.Set("X-Twilio-Token", q.xtoken)
	}
	if q.origin != "" {
		req.Header.Set("Origin", q.origin)
	}
	for k, v := range q.headers {
		req.Header.Set(k, v)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, issuer.ICEServersPath, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// preflight is a browser's CORS preflight for a POST with Authorization.
func (f *fixture) preflight(t testing.TB, origin string) response {
	t.Helper()
	return f.ice(t, iceReq{method: http.MethodOptions, origin: origin, headers: map[string]string{
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization",
	}})
}

// newKey creates an API key of accountSid through the service (real SQLite).
func (f *fixture) newKey(t testing.TB, accountSid string) store.Key {
	t.Helper()
	k, err := f.svc.CreateKey(context.Background(), accountSid, "browser")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// accessToken signs an Access Token with auth.AccessToken.Sign at the fixture's clock.
func (f *fixture) accessToken(t testing.TB, k store.Key, identity string, ttl time.Duration, nts *auth.NTSGrant) string {
	t.Helper()
	tok, err := auth.AccessToken{
		AccountSid: k.AccountSid, KeySid: k.Sid, Identity: identity, TTL: ttl,
		Grants: auth.Grants{NTS: nts},
	}.Sign([]byte(k.Secret), f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ntsGrant is traverse's nts grant written with twilio-go's grant interface.
type ntsGrant struct{ ttl int }

func (g *ntsGrant) Key() string               { return "nts" }
func (g *ntsGrant) ToPayload() map[string]any { return map[string]any{"ttl": g.ttl} }
func (g *ntsGrant) ToString() string          { return fmt.Sprintf(`{"ttl":%d}`, g.ttl) }

// twilioGoToken mints an Access Token with twilio-go's client/jwt (1 h, at
// time.Now()).
func twilioGoToken(t testing.TB, k store.Key, identity string, grants ...twjwt.BaseGrant) string {
	t.Helper()
	at := twjwt.CreateAccessToken(twjwt.AccessTokenParams{
		AccountSid: k.AccountSid, SigningKeySid: k.Sid, Secret: k.Secret, Identity: identity, Ttl: 3600,
	})
	for _, g := range grants {
		at.AddGrant(g)
	}
	tok, err := at.ToJwt()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenExp reads a verified token's exp, as the issuer sees it.
func tokenExp(t testing.TB, tok string, k store.Key, now time.Time) time.Time {
	t.Helper()
	c, err := auth.VerifyAccessToken(tok, func(string) (string, []byte, error) {
		return k.AccountSid, []byte(k.Secret), nil
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	return c.ExpiresAt
}

// iceUsername is "<expiry>:<AccountSid>:<identity>:<16 hex>", or without
// the identity for a token that has none.
var iceUsername = regexp.MustCompile(`^([0-9]+):(AC[0-9a-f]{32}):(?:([A-Za-z0-9_.@-]{1,64}):)?[0-9a-f]{16}$`)

// checkICEAnswer decodes a 201 and checks the credential as the relay would:
// it verifies with the secret ring now, names the account and identity, is
// on every TURN entry, expires at or before notAfter and lasts wantTTL.
func checkICEAnswer(t *testing.T, f *fixture, r response, identity string, notAfter time.Time, wantTTL time.Duration) issuer.TokenResource {
	t.Helper()
	if r.status != http.StatusCreated || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	if got, want := strings.Join(sorted(keys), " "), "account_sid date_created date_updated ice_servers password ttl username"; got != want {
		t.Fatalf("keys %q, want the Tokens resource's %q", got, want)
	}
	var tok issuer.TokenResource
	if err := json.Unmarshal(r.body, &tok); err != nil {
		t.Fatal(err)
	}
	m := iceUsername.FindStringSubmatch(tok.Username)
	if m == nil || m[2] != f.acct.Sid || m[3] != identity {
		t.Fatalf("username %q, want <expiry>:%s:%s:<hex>", tok.Username, f.acct.Sid, identity)
	}
	if tok.AccountSid != f.acct.Sid {
		t.Errorf("account_sid %q", tok.AccountSid)
	}
	if want := strconv.Itoa(int(wantTTL / time.Second)); tok.TTL != want {
		t.Errorf("ttl %q, want %q", tok.TTL, want)
	}
	now := f.clock.Now()
	if want := now.UTC().Truncate(time.Second).Format(issuer.TimeFormat); tok.DateCreated != want || tok.DateUpdated != want {
		t.Errorf("dates %q %q, want %q", tok.DateCreated, tok.DateUpdated, want)
	}
	user, err := f.secrets.Verify(tok.Username, tok.Password, now, policy)
	if err != nil {
		t.Fatalf("the relay would refuse the credential: %v", err)
	}
	wantPrefix := f.acct.Sid + ":" + identity + ":"
	if identity == "" {
		wantPrefix = f.acct.Sid + ":"
	}
	if !strings.HasPrefix(user, wantPrefix) || (identity == "" && strings.Count(user, ":") != 1) {
		t.Errorf("user %q, want %s<...>", user, wantPrefix)
	}
	exp, _, err := auth.ParseUsername(tok.Username)
	if err != nil {
		t.Fatal(err)
	}
	if exp.After(notAfter) {
		t.Errorf("credential expires %v, after the token's exp %v", exp, notAfter)
	}
	if want := now.Truncate(time.Second).Add(wantTTL); !exp.Equal(want) {
		t.Errorf("credential expires %v, want %v", exp, want)
	}
	turns := 0
	for i, s := range tok.ICEServers {
		if s.URL != testURIs[i] || s.URLs != testURIs[i] {
			t.Errorf("ice_servers[%d] = %q, want %q", i, s.URLs, testURIs[i])
		}
		if strings.HasPrefix(s.URLs, "turn") {
			turns++
			if s.Username != tok.Username || s.Credential != tok.Password {
				t.Errorf("ice_servers[%d] lacks the credential", i)
			}
		}
	}
	if len(tok.ICEServers) != len(testURIs) || turns != 4 {
		t.Errorf("%d ice servers (%d TURN), want %d (4)", len(tok.ICEServers), turns, len(testURIs))
	}
	return tok
}

// checkCORS checks the headers an allowed origin gets.
func checkCORS(t *testing.T, r response, origin string) {
	t.Helper()
	if got := r.header.Get("Access-Control-Allow-Origin"); got != origin {
		t.Errorf("Access-Control-Allow-Origin %q, want %q", got, origin)
	}
	if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") {
		t.Errorf("Vary %q lacks Origin", r.header.Values("Vary"))
	}
}

// checkNoCORS checks that no Access-Control-* header was sent.
func checkNoCORS(t *testing.T, r response) {
	t.Helper()
	for k := range r.header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("foreign origin got %s: %q", k, r.header.Get(k))
		}
	}
}

func checkPreflightOK(t *testing.T, r response, origin string) {
	t.Helper()
	if r.status != http.StatusNoContent {
		t.Fatalf("preflight status %d: %s", r.status, r.body)
	}
	checkCORS(t, r, origin)
	for k, want := range map[string]string{
		"Access-Control-Allow-Methods": "POST, OPTIONS",
		"Access-Control-Allow-Headers": "Authorization, X-Twilio-Token, Content-Type",
		"Access-Control-Max-Age":       "600",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
}

// TestIceServersBrowserAccessToken: a browser-style exchange (preflight, then
// POST with Origin and a bearer Access Token) for a key created in the store,
// with tokens from twilio-go's client/jwt and from auth.AccessToken.Sign. The
// credential verifies as the relay would, expires no later than the token,
// and an nts grant caps it.
func TestIceServersBrowserAccessToken(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	now := time.Now().Truncate(time.Second)
	f.setNow(now)
	k := f.newKey(t, f.acct.Sid)

	cases := []struct {
		name     string
		token    string
		identity string
		ttl      func(exp time.Time) time.Duration
	}{
		{"twilio-go", twilioGoToken(t, k, "browser_user"), "browser_user",
			func(exp time.Time) time.Duration { return exp.Sub(now).Truncate(time.Second) }},
		{"twilio-go nts cap", twilioGoToken(t, k, "browser_user", &ntsGrant{ttl: 300}), "browser_user",
			func(time.Time) time.Duration { return 300 * time.Second }},
		{"auth.Sign", f.accessToken(t, k, "alice", time.Hour, nil), "alice",
			func(time.Time) time.Duration { return time.Hour }},
		{"auth.Sign nts empty", f.accessToken(t, k, "alice", 2*time.Hour, &auth.NTSGrant{}), "alice",
			func(time.Time) time.Duration { return 2 * time.Hour }},
		{"auth.Sign nts cap", f.accessToken(t, k, "alice", 2*time.Hour, &auth.NTSGrant{TTL: 90 * time.Second}), "alice",
			func(time.Time) time.Duration { return 90 * time.Second }},
		{"auth.Sign anonymous", f.accessToken(t, k, "", time.Hour, nil), "",
			func(time.Time) time.Duration { return time.Hour }},
		{"auth.Sign unsafe identity", f.accessToken(t, k, "bob:ünï côde/"+strings.Repeat("x", 100), time.Hour, nil),
			"bob__n__c_de_" + strings.Repeat("x", 51), func(time.Time) time.Duration { return time.Hour }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkPreflightOK(t, f.preflight(t, appOrigin), appOrigin)
			exp := tokenExp(t, c.token, k, now)
			r := f.ice(t, iceReq{bearer: c.token, origin: appOrigin})
			checkICEAnswer(t, f, r, c.identity, exp, c.ttl(exp))
			checkCORS(t, r, appOrigin)
		})
	}
	// A Ttl below the token's remaining life wins; X-Twilio-Token works too.
	r := f.ice(t, iceReq{xtoken: cases[0].token, origin: appOrigin, form: "Ttl=600"})
	checkICEAnswer(t, f, r, "browser_user", tokenExp(t, cases[0].token, k, now), 600*time.Second)
	// Ttl in the query works as well as in the form body.
	r = f.ice(t, iceReq{bearer: cases[2].token, query: "Ttl=120"})
	checkICEAnswer(t, f, r, "alice", now.Add(time.Hour), 120*time.Second)

	if got := f.counter(t, "traverse_issuer_ice_servers_issued_total", "token=access"); got != float64(len(cases)+2) {
		t.Errorf("ice_servers_issued{access} = %v, want %d", got, len(cases)+2)
	}
	if got := f.counter(t, "traverse_issuer_ice_servers_issued_total", "token=capability"); got != 0 {
		t.Errorf("ice_servers_issued{capability} = %v, want a pre-created 0", got)
	}
	if got := f.counter(t, "traverse_issuer_tokens_issued_total"); got != 0 {
		t.Errorf("tokens_issued_total = %v: the Tokens resource's counter moved", got)
	}
	if got := f.counter(t, "traverse_issuer_requests_total", "route=ice_servers", "code=201"); got != float64(len(cases)+2) {
		t.Errorf("requests_total{ice_servers,201} = %v", got)
	}
}

// TestIceServersCapabilityToken: a Capability Token signed with the account's
// auth token works, in either header; its client name is the identity.
func TestIceServersCapabilityToken(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	a := f.acct
	tok, err := auth.CapabilityToken{
		AccountSid: a.Sid, TTL: 10 * time.Minute,
		Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "carol"}},
	}.Sign([]byte(a.AuthToken), t0)
	if err != nil {
		t.Fatal(err)
	}
	checkPreflightOK(t, f.preflight(t, appOrigin), appOrigin)
	r := f.ice(t, iceReq{xtoken: tok, origin: appOrigin})
	checkICEAnswer(t, f, r, "carol", t0.Add(10*time.Minute), 10*time.Minute)
	checkCORS(t, r, appOrigin)
	r = f.ice(t, iceReq{bearer: tok, form: "Ttl=60"})
	checkICEAnswer(t, f, r, "carol", t0.Add(10*time.Minute), time.Minute)

	// Outgoing-only: the outgoing client name.
	out, err := auth.CapabilityToken{
		AccountSid: a.Sid, TTL: time.Hour,
		Scopes: []auth.Scope{auth.OutgoingClientScope{ApplicationSid: "AP123", ClientName: "dave"}},
	}.Sign([]byte(a.AuthToken), t0)
	if err != nil {
		t.Fatal(err)
	}
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: out}), "dave", t0.Add(time.Hour), time.Hour)

	// Signed with another account's auth token: bad signature.
	bad, err := auth.CapabilityToken{
		AccountSid: a.Sid, TTL: time.Hour, Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "carol"}},
	}.Sign([]byte("0123456789abcdef0123456789abcdef"), t0)
	if err != nil {
		t.Fatal(err)
	}
	checkError(t, f.ice(t, iceReq{bearer: bad}), 401, auth.CodeTokenSignature)
	if got := f.counter(t, "traverse_issuer_ice_servers_issued_total", "token=capability"); got != 3 {
		t.Errorf("ice_servers_issued{capability} = %v, want 3", got)
	}
}

// TestIceServersRevocation: deleting the key (through the Keys API or the
// store) refuses the very token that worked a moment ago with 20151; so does
// suspending the account, for Access and Capability Tokens alike.
func TestIceServersRevocation(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	a := f.acct
	ctx := context.Background()

	// A key created and deleted through the Keys API.
	r := f.do(t, request{method: "POST", path: keysPath(a.Sid), user: a.Sid, pass: a.AuthToken, form: "FriendlyName=browser"})
	if r.status != http.StatusCreated {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	var kr issuer.KeyResource
	if err := json.Unmarshal(r.body, &kr); err != nil {
		t.Fatal(err)
	}
	apiKey := store.Key{Sid: kr.Sid, Secret: kr.Secret, AccountSid: a.Sid}
	tok := f.accessToken(t, apiKey, "alice", time.Hour, nil)
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: tok}), "alice", t0.Add(time.Hour), time.Hour)
	r = f.do(t, request{method: "DELETE", path: "/2010-04-01/Accounts/" + a.Sid + "/Keys/" + kr.Sid + ".json", user: a.Sid, pass: a.AuthToken})
	if r.status != http.StatusNoContent {
		t.Fatalf("delete key: %d %s", r.status, r.body)
	}
	r = f.ice(t, iceReq{bearer: tok, origin: appOrigin})
	checkError(t, r, 401, auth.CodeTokenAuth)
	checkCORS(t, r, appOrigin) // the page can read why
	golden(t, "ice_servers_error_20151", r)

	// A key deleted in the store directly.
	k := f.newKey(t, a.Sid)
	tok2 := f.accessToken(t, k, "alice", time.Hour, nil)
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: tok2}), "alice", t0.Add(time.Hour), time.Hour)
	if err := f.store.DeleteKey(ctx, a.Sid, k.Sid); err != nil {
		t.Fatal(err)
	}
	checkError(t, f.ice(t, iceReq{bearer: tok2}), 401, auth.CodeTokenAuth)
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=unknown_sid"); got != 2 {
		t.Errorf("auth_failures{unknown_sid} = %v, want 2", got)
	}

	// A suspended account authenticates nothing; reactivated, it does again.
	k3 := f.newKey(t, a.Sid)
	tok3 := f.accessToken(t, k3, "alice", time.Hour, nil)
	capTok, err := auth.CapabilityToken{
		AccountSid: a.Sid, TTL: time.Hour, Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "carol"}},
	}.Sign([]byte(a.AuthToken), t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	checkError(t, f.ice(t, iceReq{bearer: tok3}), 401, auth.CodeTokenAuth)
	checkError(t, f.ice(t, iceReq{bearer: capTok}), 401, auth.CodeTokenAuth)
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=suspended"); got != 2 {
		t.Errorf("auth_failures{suspended} = %v, want 2", got)
	}
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, store.StatusActive); err != nil {
		t.Fatal(err)
	}
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: tok3}), "alice", t0.Add(time.Hour), time.Hour)
}

// signRaw assembles a JWT from literal header and payload JSON, signed with
// HMAC over h (nil: no signature).
func signRaw(header, payload string, secret []byte, h func() hash.Hash) string {
	enc := base64.RawURLEncoding
	in := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	if h == nil {
		return in + "."
	}
	m := hmac.New(h, secret)
	m.Write([]byte(in))
	return in + "." + enc.EncodeToString(m.Sum(nil))
}

// TestIceServersAttacks: hostile tokens each get their Twilio code and a
// 401 (never a 500), are counted by reason, leave nothing secret in the logs,
// and the server keeps serving.
func TestIceServersAttacks(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	a := f.acct
	ctx := context.Background()
	k := f.newKey(t, a.Sid)
	other, err := f.svc.CreateAccount(ctx, "Other", "")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := f.newKey(t, other.Sid)
	good := f.accessToken(t, k, "alice", time.Hour, nil)

	const accessHeader = `{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`
	payload := func(iat, exp time.Time) string {
		return fmt.Sprintf(`{"jti":"%s-%d","grants":{"identity":"alice"},"iat":%d,"exp":%d,"iss":"%s","sub":"%s"}`,
			k.Sid, iat.Unix(), iat.Unix(), exp.Unix(), k.Sid, a.Sid)
	}
	secret := []byte(k.Secret)
	parts := strings.Split(good, ".")
	pl, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(pl), "alice", "mallo", 1))) + "." + parts[2]
	expired, err := auth.AccessToken{AccountSid: a.Sid, KeySid: k.Sid, Identity: "alice", TTL: time.Hour}.Sign(secret, t0.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	notYet, err := auth.AccessToken{AccountSid: a.Sid, KeySid: k.Sid, Identity: "alice", TTL: 2 * time.Hour, NotBefore: t0.Add(time.Hour)}.Sign(secret, t0)
	if err != nil {
		t.Fatal(err)
	}
	foreignKey := f.accessToken(t, store.Key{Sid: otherKey.Sid, Secret: otherKey.Secret, AccountSid: a.Sid}, "alice", time.Hour, nil)

	cases := []struct {
		name   string
		q      iceReq
		code   int
		reason string
	}{
		{"alg none", iceReq{bearer: signRaw(`{"alg":"none","typ":"JWT","cty":"twilio-fpa;v=1"}`, payload(t0, t0.Add(time.Hour)), nil, nil)},
			auth.CodeTokenHeaderFields, "token_malformed"},
		{"HS512", iceReq{bearer: signRaw(`{"alg":"HS512","typ":"JWT","cty":"twilio-fpa;v=1"}`, payload(t0, t0.Add(time.Hour)), secret, sha512.New)},
			auth.CodeTokenHeaderFields, "token_malformed"},
		{"tampered payload", iceReq{bearer: tampered}, auth.CodeTokenSignature, "wrong_secret"},
		{"expired", iceReq{bearer: expired}, auth.CodeTokenExpired, "token_expired"},
		{"nbf in the future", iceReq{bearer: notYet}, auth.CodeTokenNotYetValid, "token_not_yet_valid"},
		{"exp 25h ahead", iceReq{bearer: signRaw(accessHeader, payload(t0, t0.Add(25*time.Hour)), secret, sha256.New)},
			auth.CodeTokenTooLong, "token_too_long"},
		{"key of another account", iceReq{bearer: foreignKey}, auth.CodeTokenAuth, "unknown_sid"},
		{"truncated", iceReq{bearer: good[:strings.LastIndex(good, ".")]}, auth.CodeTokenInvalid, "token_malformed"},
		{"garbage", iceReq{bearer: "not a token!"}, auth.CodeTokenInvalid, "token_malformed"},
		{"garbage header", iceReq{bearer: "Zm9v.eyJ9.c2ln"}, auth.CodeTokenHeader, "token_malformed"},
		{"missing header", iceReq{}, auth.CodeTokenInvalid, "missing"},
		{"basic auth", iceReq{authz: "Basic " + base64.StdEncoding.EncodeToString([]byte(a.Sid+":"+a.AuthToken))}, auth.CodeTokenInvalid, "missing"},
		{"huge token", iceReq{xtoken: strings.Repeat("a", 12<<10)}, auth.CodeTokenInvalid, "token_malformed"},
	}
	want := map[string]float64{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.ice(t, c.q)
			checkError(t, r, 401, c.code)
			wa := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(wa, "Bearer ") || strings.Contains(wa, "invalid_token") != (c.reason != "missing") {
				t.Errorf("WWW-Authenticate %q", wa)
			}
		})
		want[c.reason]++
	}
	for reason, n := range want {
		if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason="+reason); got != n {
			t.Errorf("auth_failures{%s} = %v, want %v", reason, got, n)
		}
	}
	if got := f.counter(t, "traverse_issuer_requests_total", "route=ice_servers", "code=500"); got > 0 {
		t.Errorf("%v answers were 500", got)
	}
	// Still serving, and the failures fit in one client's budget.
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: good}), "alice", t0.Add(time.Hour), time.Hour)

	// Bad input after authentication: 400, not 500.
	checkError(t, f.ice(t, iceReq{bearer: good, form: "Ttl=0"}), 400, issuer.CodeInvalidParameter)
	checkError(t, f.ice(t, iceReq{bearer: good, form: "Ttl=%zz"}), 400, issuer.CodeInvalidParameter)

	// Nothing secret reached the logs.
	for _, e := range f.logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range []string{good, parts[2], k.Secret, otherKey.Secret, a.AuthToken} {
			if strings.Contains(line, s) {
				t.Fatalf("log %q contains a secret or token", line)
			}
		}
	}
}

// TestIceServersNeverOutlivesToken: the credential's ttl is the time left on
// the token, and a token in its last second (still inside the verifier's
// clock-skew grace) gets 20104, not a credential that would outlive it.
func TestIceServersNeverOutlivesToken(t *testing.T) {
	f := newICEFixture(t)
	k := f.newKey(t, f.acct.Sid)
	tok := f.accessToken(t, k, "alice", time.Hour, nil)
	// 29.6 s left: the credential gets 30 s counted from the whole second,
	// so it expires exactly with the token.
	f.clock.Advance(59*time.Minute + 30*time.Second + 400*time.Millisecond)
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: tok}), "alice", t0.Add(time.Hour), 30*time.Second)
	f.clock.Advance(30 * time.Second) // 0.4 s past exp: the verifier's skew accepts it, the mint does not
	checkError(t, f.ice(t, iceReq{bearer: tok}), 401, auth.CodeTokenExpired)
	f.clock.Advance(time.Minute) // beyond the skew: the verifier refuses
	checkError(t, f.ice(t, iceReq{bearer: tok}), 401, auth.CodeTokenExpired)
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=token_expired"); got != 2 {
		t.Errorf("auth_failures{token_expired} = %v, want 2", got)
	}
}

// TestIceServersMaxTTL: auth.max_ttl caps the credential below the token.
func TestIceServersMaxTTL(t *testing.T) {
	f := newICEFixture(t)
	f.srv.Close()
	var err error
	f.reg = prometheus.NewRegistry()
	f.svc, err = issuer.New(issuer.Options{
		Store: f.store, Secrets: func() *auth.Secrets { return f.secrets },
		URIs: func() []string { return testURIs }, Registerer: f.reg, Now: f.clock.Now, MaxTTL: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.svc.Handler())
	k := f.newKey(t, f.acct.Sid)
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: f.accessToken(t, k, "alice", time.Hour, nil)}), "alice", t0.Add(time.Hour), 5*time.Minute)
}

// TestIceServersCORS: an allowed origin gets the CORS headers on answers and
// preflights; a foreign origin gets none and a 403 preflight; "*" allows any;
// other methods are 405.
func TestIceServersCORS(t *testing.T) {
	f := newICEFixture(t, appOrigin, "https://other.example.com/")
	k := f.newKey(t, f.acct.Sid)
	tok := f.accessToken(t, k, "alice", time.Hour, nil)

	checkPreflightOK(t, f.preflight(t, appOrigin), appOrigin)
	checkPreflightOK(t, f.preflight(t, "https://other.example.com"), "https://other.example.com")
	r := f.ice(t, iceReq{bearer: tok, origin: appOrigin})
	checkCORS(t, r, appOrigin)
	if r.status != 201 {
		t.Fatalf("status %d", r.status)
	}
	// Errors carry them too, so a page can read the code.
	r = f.ice(t, iceReq{origin: appOrigin})
	checkError(t, r, 401, auth.CodeTokenInvalid)
	checkCORS(t, r, appOrigin)

	// A foreign origin: no CORS headers, preflight refused. (A POST is still
	// answered: any non-browser client can forge Origin; the browser is the
	// one that withholds the answer from the page.)
	for _, o := range []string{foreignOrigin, "https://app.example.com.evil.net", "http://app.example.com", "null"} {
		r := f.preflight(t, o)
		checkError(t, r, 403, issuer.CodeForbidden)
		checkNoCORS(t, r)
		r = f.ice(t, iceReq{bearer: tok, origin: o})
		checkNoCORS(t, r)
	}
	// An OPTIONS without Origin is not a preflight.
	r = f.ice(t, iceReq{method: http.MethodOptions})
	if r.status != 204 || r.header.Get("Allow") != "POST, OPTIONS" {
		t.Errorf("plain OPTIONS: %d, Allow %q", r.status, r.header.Get("Allow"))
	}
	checkNoCORS(t, r)
	// GET and others: 405 in Twilio's shape, with CORS for the allowed origin.
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		r := f.ice(t, iceReq{method: m, bearer: tok, origin: appOrigin})
		checkError(t, r, 405, issuer.CodeMethodNotAllowed)
		if r.header.Get("Allow") != "POST, OPTIONS" {
			t.Errorf("%s: Allow %q", m, r.header.Get("Allow"))
		}
		checkCORS(t, r, appOrigin)
	}

	// No origins configured: no browser may call.
	none := newICEFixture(t)
	r = none.preflight(t, appOrigin)
	checkError(t, r, 403, issuer.CodeForbidden)
	checkNoCORS(t, r)

	// "*": any origin is echoed.
	star := newICEFixture(t, "*")
	ks := star.newKey(t, star.acct.Sid)
	for _, o := range []string{appOrigin, foreignOrigin} {
		checkPreflightOK(t, star.preflight(t, o), o)
		r := star.ice(t, iceReq{bearer: star.accessToken(t, ks, "alice", time.Hour, nil), origin: o})
		if r.status != 201 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		checkCORS(t, r, o)
	}
}

// TestIceServersGolden: the success body for an Access Token, normalised.
func TestIceServersGolden(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	k := f.newKey(t, f.acct.Sid)
	r := f.ice(t, iceReq{bearer: f.accessToken(t, k, "alice", time.Hour, nil), origin: appOrigin})
	r.body = regexp.MustCompile(`:alice:[0-9a-f]{16}"`).ReplaceAll(r.body, []byte(`:alice:RANDOM"`))
	golden(t, "ice_servers_access_token", r)
}

// TestIceServersRateLimit: failed token attempts spend the client's failure
// budget; once over, even a good token gets 429.
func TestIceServersRateLimit(t *testing.T) {
	f := newICEFixture(t, appOrigin)
	k := f.newKey(t, f.acct.Sid)
	good := f.accessToken(t, k, "alice", time.Hour, nil)
	bad := good[:len(good)-2] + "xx"
	for i := 0; i < 20; i++ {
		if r := f.ice(t, iceReq{bearer: bad}); r.status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.status)
		}
	}
	r := f.ice(t, iceReq{bearer: good, origin: appOrigin})
	checkError(t, r, 429, issuer.CodeTooManyRequests)
	checkCORS(t, r, appOrigin)
	// A preflight spends nothing and is not limited.
	checkPreflightOK(t, f.preflight(t, appOrigin), appOrigin)
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=rate_limited"); got != 1 {
		t.Errorf("auth_failures{rate_limited} = %v, want 1", got)
	}
	f.clock.Advance(150 * time.Millisecond)
	checkICEAnswer(t, f, f.ice(t, iceReq{bearer: good}), "alice", t0.Add(time.Hour), time.Hour)
}

func TestSanitizeIdentity(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "anonymous",
		"alice":                 "alice",
		"a.b-c_d@example.com":   "a.b-c_d@example.com",
		"a:b":                   "a_b",
		"ünï":                   "_n_",
		"x y\x00z":              "x_y_z",
		strings.Repeat("z", 99): strings.Repeat("z", issuer.MaxIdentityLen),
		"\xff\xfe":              "__",
	} {
		if got := issuer.SanitizeIdentity(in); got != want {
			t.Errorf("SanitizeIdentity(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzAuthenticateToken: whatever the bearer, the answer is a principal or
// a token refusal (a 401), never another error (which would be a 500).
func FuzzAuthenticateToken(f *testing.F) {
	fx := newICEFixture(f)
	k := fx.newKey(f, fx.acct.Sid)
	good := fx.accessToken(f, k, "alice", time.Hour, &auth.NTSGrant{TTL: time.Minute})
	capTok, err := auth.CapabilityToken{
		AccountSid: fx.acct.Sid, Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "carol"}},
	}.Sign([]byte(fx.acct.AuthToken), t0)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "a.b.c", good, capTok, good[:len(good)-1], "Zm9v.eyJ9.c2ln",
		signRaw(`{"alg":"HS256","typ":"JWT"}`, `{"iss":"`+fx.acct.Sid+`","exp":1e300}`, []byte(fx.acct.AuthToken), sha256.New)} {
		f.Add(s)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := fx.svc.AuthenticateToken(ctx, tok)
		if err != nil {
			if auth.CodeOf(err) == 0 {
				t.Fatalf("%q: not a token refusal: %v", tok, err)
			}
			return
		}
		if _, err := fx.svc.CreateICEServers(p, issuer.DefaultTTL); err != nil && auth.CodeOf(err) == 0 {
			t.Fatalf("%q: mint: %v", tok, err)
		}
	})
}
