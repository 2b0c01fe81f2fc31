package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/testlog"
	"github.com/traverse/traverse/store"
)

// These tests drive the console over real HTTP on loopback, against the
// real issuer, store and relay, as a browser would: the cookie is carried
// by hand because Go's cookie jar, like a browser, keeps a Secure cookie off
// plain HTTP (browsers make an exception for localhost).

type consoleEnv struct {
	t    *testing.T
	srv  *Server
	base string // http://127.0.0.1:port/console/
	now  *testClock
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serving starts a Server on cfg and serves it until the test ends.
// startServer makes a Server of cfg with the clock now and serves it until
// the test ends.
func startServer(t *testing.T, cfg config.Config, now func() time.Time) *Server {
	t.Helper()
	s, err := New(context.Background(), Options{Config: cfg, Log: testlog.New(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	serving(t, s)
	return s
}

func startConsole(t *testing.T) *consoleEnv {
	t.Helper()
	clk := &testClock{t: time.Now()}
	cfg := loopbackConfig(t)
	cfg.Relay.Peers.AllowLoopback = true
	s := startServer(t, cfg, clk.Now)
	if s.ConsoleURL() == "" {
		t.Fatal("ConsoleURL is empty with console.enabled")
	}
	return &consoleEnv{t: t, srv: s, base: s.ConsoleURL(), now: clk}
}

func (e *consoleEnv) account(parent string) store.Account {
	e.t.Helper()
	a, err := e.srv.Issuer().CreateAccount(context.Background(), "console test", parent)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

type consoleReq struct {
	method, path string
	body         string
	cookie, csrf string
	header       map[string]string
}

type consoleRes struct {
	status  int
	body    string
	cookies []*http.Cookie
	header  http.Header
}

func (e *consoleEnv) do(r consoleReq) consoleRes {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, e.base+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "traverse_console", Value: r.cookie})
	}
	if r.csrf != "" {
		req.Header.Set("X-CSRF-Token", r.csrf)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return consoleRes{status: res.StatusCode, body: string(b), cookies: res.Cookies(), header: res.Header}
}

type signedIn struct {
	cookie string
	info   struct {
		AccountSid string `json:"account_sid"`
		Primary    bool   `json:"primary"`
		CSRFToken  string `json:"csrf_token"`
	}
}

func (e *consoleEnv) signIn(sid, secret string) signedIn {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"sid": sid, "secret": secret})
	res := e.do(consoleReq{method: "POST", path: "api/signin", body: string(body)})
	if res.status != http.StatusOK {
		e.t.Fatalf("sign-in: %d %s", res.status, res.body)
	}
	var s signedIn
	if err := json.Unmarshal([]byte(res.body), &s.info); err != nil || s.info.CSRFToken == "" {
		e.t.Fatalf("sign-in answer %s: %v", res.body, err)
	}
	for _, c := range res.cookies {
		if c.Name == "traverse_console" {
			s.cookie = c.Value
		}
	}
	if s.cookie == "" {
		e.t.Fatalf("sign-in set no session cookie: %v", res.cookies)
	}
	return s
}

// allocate holds a TURN allocation for accountSid until the test ends.
// allocate makes an allocation for accountSid with pion's client and
// returns its session ID, as the console lists it.
func (e *consoleEnv) allocate(accountSid string) string {
	e.t.Helper()
	tok, err := e.srv.Issuer().CreateToken(context.Background(), accountSid, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	server := e.srv.Relay().Addrs().UDP[0].String()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: tok.Username, Password: tok.Password, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		e.t.Fatal(err)
	}
	rc, err := c.Allocate()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = rc.Close(); c.Close(); _ = conn.Close() })
	relayed := rc.LocalAddr().String()
	for _, a := range e.srv.Relay().Allocations() {
		if a.Relay.String() == relayed {
			return a.ID
		}
	}
	e.t.Fatalf("no live allocation relays on %s", relayed)
	return ""
}

func sessionIDs(t *testing.T, body string) map[string]string {
	t.Helper()
	var out struct {
		Sessions []struct{ ID, Account string }
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("sessions %s: %v", body, err)
	}
	m := map[string]string{}
	for _, s := range out.Sessions {
		m[s.ID] = s.Account
	}
	return m
}

var consoleGETs = []string{"api/session", "api/metrics", "api/status", "api/sessions", "api/usage"}

// TestConsoleNoCookieNoData: without a session cookie, or with a made-up or
// signed-out one, every endpoint answers 401 and nothing else.
func TestConsoleNoCookieNoData(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	e.allocate(primary.Sid)
	s := e.signIn(primary.Sid, primary.AuthToken)
	if res := e.do(consoleReq{method: "POST", path: "api/signout", cookie: s.cookie, csrf: s.info.CSRFToken, body: "{}"}); res.status != 200 {
		t.Fatalf("sign-out: %d %s", res.status, res.body)
	}
	for _, cookie := range []string{"", "made-up", s.cookie} {
		for _, p := range consoleGETs {
			res := e.do(consoleReq{method: "GET", path: p, cookie: cookie})
			if res.status != http.StatusUnauthorized || strings.Contains(res.body, primary.Sid) || strings.Contains(res.body, "relayed") {
				t.Errorf("GET %s with cookie %q: %d %s", p, cookie, res.status, res.body)
			}
		}
		res := e.do(consoleReq{method: "POST", path: "api/ice-credential", cookie: cookie, body: "{}"})
		if res.status != http.StatusUnauthorized || strings.Contains(res.body, "credential\"") {
			t.Errorf("POST ice-credential with cookie %q: %d %s", cookie, res.status, res.body)
		}
	}
	// The page itself is public: it holds no data, loads nothing from
	// another origin and may not be framed.
	res := e.do(consoleReq{method: "GET", path: ""})
	if res.status != 200 || !strings.Contains(res.body, "traverse console") {
		t.Errorf("GET /console/: %d", res.status)
	}
	if csp := res.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

// TestConsoleSignInCookie: the cookie is HttpOnly, Secure, SameSite=Strict,
// scoped to /console/, and ends with the session; a wrong secret gets none.
func TestConsoleSignInCookie(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	res := e.do(consoleReq{method: "POST", path: "api/signin", body: `{"sid":"` + primary.Sid + `","secret":"` + primary.AuthToken + `"}`})
	if res.status != 200 || len(res.cookies) != 1 {
		t.Fatalf("sign-in: %d %v %s", res.status, res.cookies, res.body)
	}
	c := res.cookies[0]
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/console/" {
		t.Errorf("cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/console/", c)
	}
	if d := c.Expires.Sub(e.now.Now()); d <= 0 || d > 16*time.Minute {
		t.Errorf("cookie expires in %s, want the 15m session lifetime", d)
	}
	for _, bad := range []string{
		`{"sid":"` + primary.Sid + `","secret":"wrong"}`,
		`{"sid":"AC00000000000000000000000000000000","secret":"` + primary.AuthToken + `"}`,
		`{"sid":"","secret":""}`,
	} {
		res := e.do(consoleReq{method: "POST", path: "api/signin", body: bad})
		if res.status != http.StatusUnauthorized || len(res.cookies) != 0 {
			t.Errorf("sign-in %s: %d %v", bad, res.status, res.cookies)
		}
	}
	if res := e.do(consoleReq{method: "POST", path: "api/signin", body: "{not json"}); res.status != http.StatusBadRequest {
		t.Errorf("malformed sign-in: %d %s", res.status, res.body)
	}
}

// TestConsoleCSRF: a state-changing call carrying the session cookie (as a
// browser attaches it) but not the session's CSRF token is refused, as is
// one another site's page makes; a cross-site sign-in is refused too.
func TestConsoleCSRF(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	id := e.allocate(primary.Sid)
	s := e.signIn(primary.Sid, primary.AuthToken)
	kill := "api/sessions/" + id + "/kill"
	cross := map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
	for _, r := range []consoleReq{
		{method: "POST", path: kill, cookie: s.cookie},
		{method: "POST", path: kill, cookie: s.cookie, csrf: "wrong-token"},
		{method: "POST", path: kill, cookie: s.cookie, csrf: s.info.CSRFToken, header: cross},
		{method: "POST", path: kill, cookie: s.cookie, csrf: s.info.CSRFToken, header: map[string]string{"Origin": "https://evil.example"}},
		{method: "POST", path: "api/ice-credential", cookie: s.cookie, body: "{}"},
		{method: "POST", path: "api/signout", cookie: s.cookie, body: "{}", header: cross},
	} {
		if res := e.do(r); res.status != http.StatusForbidden {
			t.Errorf("%s %s csrf=%q %v: %d %s, want 403", r.method, r.path, r.csrf, r.header, res.status, res.body)
		}
	}
	if n := e.srv.Relay().AllocationCount(); n != 1 {
		t.Fatalf("a refused kill ended the allocation: %d live", n)
	}
	// Cross-site sign-in (login CSRF) and a form post are refused.
	body := `{"sid":"` + primary.Sid + `","secret":"` + primary.AuthToken + `"}`
	if res := e.do(consoleReq{method: "POST", path: "api/signin", body: body, header: cross}); res.status != http.StatusForbidden || len(res.cookies) != 0 {
		t.Errorf("cross-site sign-in: %d %v", res.status, res.cookies)
	}
	if res := e.do(consoleReq{method: "POST", path: "api/signin", body: body, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}); res.status != http.StatusUnsupportedMediaType {
		t.Errorf("form sign-in: %d, want 415", res.status)
	}
	// With the token, the same-origin kill works.
	same := map[string]string{"Origin": strings.TrimSuffix(e.base, "/console/"), "Sec-Fetch-Site": "same-origin"}
	if res := e.do(consoleReq{method: "POST", path: kill, cookie: s.cookie, csrf: s.info.CSRFToken, header: same}); res.status != 200 {
		t.Fatalf("kill with the CSRF token: %d %s", res.status, res.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Relay().AllocationCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the killed allocation is still live")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsoleSessionExpires: a session idle for console.session_ttl ends;
// use renews it, but never beyond 12 hours after sign-in.
func TestConsoleSessionExpires(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	get := func(s signedIn) int {
		return e.do(consoleReq{method: "GET", path: "api/session", cookie: s.cookie}).status
	}

	idle := e.signIn(primary.Sid, primary.AuthToken)
	e.now.Advance(14 * time.Minute)
	if got := get(idle); got != 200 {
		t.Fatalf("after 14m: %d, want 200", got)
	}
	e.now.Advance(14 * time.Minute) // renewed at 14m: 28m is 14m idle
	if got := get(idle); got != 200 {
		t.Fatalf("after 14m more: %d, want 200", got)
	}
	e.now.Advance(15*time.Minute + time.Second)
	if got := get(idle); got != http.StatusUnauthorized {
		t.Fatalf("after 15m idle: %d, want 401", got)
	}

	busy := e.signIn(primary.Sid, primary.AuthToken)
	for range 12 * 6 { // every 10 minutes for 12 hours
		e.now.Advance(10 * time.Minute)
		if get(busy) != 200 {
			break
		}
	}
	if got := get(busy); got != http.StatusUnauthorized {
		t.Fatalf("a session used every 10m for 12h: %d, want 401", got)
	}
}

// TestConsoleNoSecretEchoed: no page, asset or answer carries the auth
// token, an API key's secret, the TURN REST secret or the store key, signed
// in with either credential; a refused sign-in does not repeat what was typed.
func TestConsoleNoSecretEchoed(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	key, err := e.srv.Issuer().CreateKey(context.Background(), primary.Sid, "console key")
	if err != nil {
		t.Fatal(err)
	}
	e.allocate(primary.Sid)
	secrets := map[string]string{"auth token": primary.AuthToken, "key secret": key.Secret, "TURN REST secret": "server-test-secret-0123"}
	check := func(what, body string) {
		t.Helper()
		for name, secret := range secrets {
			if strings.Contains(body, secret) {
				t.Errorf("%s carries the %s", what, name)
			}
		}
	}
	pages := []string{"", "assets/app.js", "assets/api.js", "assets/ice.js", "assets/charts.js", "assets/format.js", "assets/console.css"}
	for _, p := range pages {
		res := e.do(consoleReq{method: "GET", path: p})
		if res.status != 200 {
			t.Errorf("GET %s: %d", p, res.status)
		}
		check("GET "+p, res.body)
	}
	for _, who := range [][2]string{{primary.Sid, primary.AuthToken}, {key.Sid, key.Secret}} {
		s := e.signIn(who[0], who[1])
		for _, p := range consoleGETs {
			res := e.do(consoleReq{method: "GET", path: p, cookie: s.cookie})
			if res.status != 200 {
				t.Errorf("GET %s as %s: %d %s", p, who[0], res.status, res.body)
			}
			check("GET "+p, res.body)
		}
		res := e.do(consoleReq{method: "POST", path: "api/ice-credential", cookie: s.cookie, csrf: s.info.CSRFToken, body: "{}"})
		if res.status != 200 || !strings.Contains(res.body, `"credential"`) {
			t.Errorf("ice-credential: %d %s", res.status, res.body)
		}
		check("the ICE tester's credential", res.body)
	}
	typed := "typed-secret-" + primary.AuthToken[:8]
	res := e.do(consoleReq{method: "POST", path: "api/signin", body: `{"sid":"` + primary.Sid + `","secret":"` + typed + `"}`})
	if res.status != 401 || strings.Contains(res.body, typed) {
		t.Errorf("refused sign-in: %d %s", res.status, res.body)
	}
}

// TestConsoleSubaccountScope: a subaccount sees and kills only its own
// sessions and not the server-wide status; the primary sees everything.
func TestConsoleSubaccountScope(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	sub := e.account(primary.Sid)
	mine := e.allocate(primary.Sid)
	theirs := e.allocate(sub.Sid)

	p := e.signIn(primary.Sid, primary.AuthToken)
	s := e.signIn(sub.Sid, sub.AuthToken)
	if !p.info.Primary || s.info.Primary {
		t.Fatalf("primary flags: primary %v, subaccount %v", p.info.Primary, s.info.Primary)
	}
	all := sessionIDs(t, e.do(consoleReq{method: "GET", path: "api/sessions", cookie: p.cookie}).body)
	if all[mine] != primary.Sid || all[theirs] != sub.Sid || len(all) != 2 {
		t.Errorf("primary sees %v, want both allocations", all)
	}
	own := sessionIDs(t, e.do(consoleReq{method: "GET", path: "api/sessions", cookie: s.cookie}).body)
	if len(own) != 1 || own[theirs] != sub.Sid {
		t.Errorf("subaccount sees %v, want only %s", own, theirs)
	}
	for _, path := range []string{"api/metrics", "api/status"} {
		if res := e.do(consoleReq{method: "GET", path: path, cookie: s.cookie}); res.status != http.StatusForbidden {
			t.Errorf("subaccount GET %s: %d, want 403", path, res.status)
		}
	}
	res := e.do(consoleReq{method: "POST", path: "api/sessions/" + mine + "/kill", cookie: s.cookie, csrf: s.info.CSRFToken, body: "{}"})
	if res.status != http.StatusNotFound || e.srv.Relay().AllocationCount() != 2 {
		t.Fatalf("subaccount killing the primary's session: %d %s (%d live)", res.status, res.body, e.srv.Relay().AllocationCount())
	}
	res = e.do(consoleReq{method: "POST", path: "api/sessions/" + theirs + "/kill", cookie: p.cookie, csrf: p.info.CSRFToken, body: "{}"})
	if res.status != 200 {
		t.Fatalf("primary killing the subaccount's session: %d %s", res.status, res.body)
	}
}

// TestConsoleSessionEndsWithCredential: a console session ends as soon as
// what signed in would no longer: a rotated auth token, a deleted key, a
// suspended account.
func TestConsoleSessionEndsWithCredential(t *testing.T) {
	e := startConsole(t)
	ctx := context.Background()
	svc := e.srv.Issuer()
	alive := func(s signedIn) bool {
		return e.do(consoleReq{method: "GET", path: "api/session", cookie: s.cookie}).status == http.StatusOK
	}

	rotated := e.account("")
	s := e.signIn(rotated.Sid, rotated.AuthToken)
	if !alive(s) {
		t.Fatal("fresh session refused")
	}
	if _, err := svc.RotateAuthToken(ctx, rotated.Sid); err != nil {
		t.Fatal(err)
	}
	if alive(s) {
		t.Error("session signed in with a rotated auth token still works")
	}

	owner := e.account("")
	key, err := svc.CreateKey(ctx, owner.Sid, "console")
	if err != nil {
		t.Fatal(err)
	}
	byKey, byToken := e.signIn(key.Sid, key.Secret), e.signIn(owner.Sid, owner.AuthToken)
	if err := svc.DeleteKey(ctx, owner.Sid, key.Sid); err != nil {
		t.Fatal(err)
	}
	if alive(byKey) {
		t.Error("session signed in with a deleted key still works")
	}
	if !alive(byToken) {
		t.Error("deleting a key ended the auth token's session")
	}
	if _, err := svc.SetAccountStatus(ctx, owner.Sid, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if alive(byToken) {
		t.Error("a suspended account's session still works")
	}
}

// TestConsoleICECredentialEveryTLSListener: the ICE tester gets the URIs
// handed out plus a turns: URI for each other TLS listener (443 and 5349 in
// production), so it tests every one.
func TestConsoleICECredentialEveryTLSListener(t *testing.T) {
	cfg := loopbackConfig(t)
	cert, key, err := DevCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS.Cert, cfg.TLS.Key = cert, key
	cfg.Listen.TLS = []string{"127.0.0.1:0", "127.0.0.1:0"}
	s, err := New(context.Background(), Options{Config: cfg, Log: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	acct, err := s.Issuer().CreateAccount(context.Background(), "tls", "")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := consoleMinter{s, s.Issuer()}.Mint(context.Background(), acct.Sid, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range s.Relay().Addrs().TLS {
		want := "turns:" + a.String() + "?transport=tcp"
		if !slices.Contains(cred.URIs, want) {
			t.Errorf("tester URIs %v lack %s", cred.URIs, want)
		}
	}
	if n := len(cred.URIs); n != len(s.ICEURIs())+1 {
		t.Errorf("tester URIs %v: want the %d handed out and one more", cred.URIs, len(s.ICEURIs()))
	}
}

// TestConsoleSignInRateLimited: after ten failed sign-ins a client address
// waits, even with the right secret, and gets no cookie.
func TestConsoleSignInRateLimited(t *testing.T) {
	e := startConsole(t)
	primary := e.account("")
	wrong := `{"sid":"` + primary.Sid + `","secret":"wrong"}`
	for i := range 10 {
		if res := e.do(consoleReq{method: "POST", path: "api/signin", body: wrong}); res.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, res.status, res.body)
		}
	}
	right := `{"sid":"` + primary.Sid + `","secret":"` + primary.AuthToken + `"}`
	if res := e.do(consoleReq{method: "POST", path: "api/signin", body: right}); res.status != http.StatusTooManyRequests || len(res.cookies) != 0 {
		t.Fatalf("sign-in after 10 failures: %d %v, want 429 and no cookie", res.status, res.cookies)
	}
	e.now.Advance(time.Minute)
	e.signIn(primary.Sid, primary.AuthToken)
}

// TestConsoleDisabled: with console.enabled false, /console/ is the
// issuer's 404 and ConsoleURL is empty.
func TestConsoleDisabled(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Console.Enabled = false
	s := startServer(t, cfg, nil)
	if s.ConsoleURL() != "" {
		t.Errorf("ConsoleURL = %q with the console off", s.ConsoleURL())
	}
	if code, body := get(t, "http://"+s.IssuerAddr().String()+"/console/"); code != http.StatusNotFound || strings.Contains(body, "traverse console") {
		t.Errorf("GET /console/ with the console off: %d %s", code, body)
	}
}
