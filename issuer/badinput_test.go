package issuer_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBadInput sends each bad request and checks Twilio's error JSON with the
// right status; after each one the server must still mint a token.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	other, err := f.svc.CreateAccount(t.Context(), "other", "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := f.svc.CreateKey(t.Context(), a.Sid, "k")
	if err != nil {
		t.Fatal(err)
	}
	good := request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}
	with := func(change func(*request)) request { q := good; change(&q); return q }
	cases := []struct {
		name         string
		q            request
		status, code int
		golden       string
	}{
		{"missing auth", with(func(q *request) { q.user = "" }), 401, 20003, "error_401"},
		{"wrong token", with(func(q *request) { q.pass = "00000000000000000000000000000000" }), 401, 20003, ""},
		{"empty password", with(func(q *request) { q.pass = "" }), 401, 20003, ""},
		{"not a SID", with(func(q *request) { q.user = "admin" }), 401, 20003, ""},
		{"other account's SID in the path", with(func(q *request) { q.path = tokensPath(other.Sid) }), 404, 20404, "error_404"},
		{"bad SID in the path", with(func(q *request) { q.path = tokensPath("ACnope") }), 404, 20404, ""},
		{"Ttl 0", with(func(q *request) { q.form = "Ttl=0" }), 400, 20001, "error_400_ttl"},
		{"Ttl -1", with(func(q *request) { q.form = "Ttl=-1" }), 400, 20001, ""},
		{"Ttl 86401", with(func(q *request) { q.form = "Ttl=86401" }), 400, 20001, ""},
		{"Ttl abc", with(func(q *request) { q.form = "Ttl=abc" }), 400, 20001, ""},
		{"Ttl 1.5", with(func(q *request) { q.form = "Ttl=1.5" }), 400, 20001, ""},
		{"Ttl huge", with(func(q *request) { q.form = "Ttl=99999999999999999999999" }), 400, 20001, ""},
		{"Ttl in the query", with(func(q *request) { q.path += "?Ttl=0" }), 400, 20001, ""},
		{"malformed form", with(func(q *request) { q.form = "Ttl=%zz" }), 400, 20001, "error_400_form"},
		{"malformed query", with(func(q *request) { q.path += "?a=%zz" }), 400, 20001, ""},
		{"10 MB body", with(func(q *request) { q.body = bytes.NewReader(bytes.Repeat([]byte("a"), 10<<20)) }), 413, 20413, "error_413"},
		{"65 KiB body", with(func(q *request) { q.form = "Ttl=60&x=" + strings.Repeat("a", 65<<10) }), 413, 20413, ""},
		{"GET on the list", with(func(q *request) { q.method = "GET" }), 405, 20004, "error_405"},
		{"DELETE on the list", with(func(q *request) { q.method = "DELETE" }), 405, 20004, ""},
		{"FriendlyName too long", request{method: "POST", path: keysPath(a.Sid), user: a.Sid, pass: a.AuthToken,
			form: "FriendlyName=" + strings.Repeat("x", 65)}, 400, 20001, ""},
		{"API key on Keys", request{method: "GET", path: keysPath(a.Sid), user: key.Sid, pass: key.Secret}, 403, 20006, "error_403"},
		{"API key creating a key", request{method: "POST", path: keysPath(a.Sid), user: key.Sid, pass: key.Secret}, 403, 20006, ""},
		{"API key creating a subaccount", request{method: "POST", path: "/2010-04-01/Accounts.json", user: key.Sid, pass: key.Secret}, 403, 20006, ""},
		{"API key of another account", with(func(q *request) { q.path = tokensPath(other.Sid); q.user, q.pass = key.Sid, key.Secret }), 404, 20404, ""},
		{"key of another account", request{method: "GET", path: "/2010-04-01/Accounts/" + a.Sid + "/Keys/SK00000000000000000000000000000000.json",
			user: a.Sid, pass: a.AuthToken}, 404, 20404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.do(t, c.q)
			checkError(t, r, c.status, c.code)
			if c.golden != "" {
				golden(t, c.golden, r)
			}
			if c.status == 401 && r.header.Get("WWW-Authenticate") != `Basic realm="traverse"` {
				t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
			if c.status == 405 && r.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q", r.header.Get("Allow"))
			}
			if r := f.do(t, good); r.status != http.StatusCreated {
				t.Fatalf("the server stopped serving: %d %s", r.status, r.body)
			}
		})
	}
}

// checkError checks Twilio's error JSON: exactly code, message, more_info and
// status, the status matching the HTTP one.
func checkError(t *testing.T, r response, status, code int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var e map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if len(e) != 4 || fmt.Sprint(e["code"]) != fmt.Sprint(code) || fmt.Sprint(e["status"]) != fmt.Sprint(status) ||
		e["more_info"] != fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code) || e["message"] == "" {
		t.Fatalf("error body %s, want code %d status %d", r.body, code, status)
	}
}

// TestRawMalformedRequests writes broken HTTP by hand on a raw TCP socket:
// the server answers (or closes) and keeps serving.
func TestRawMalformedRequests(t *testing.T) {
	f := newFixture(t)
	addr := strings.TrimPrefix(f.srv.URL, "http://")
	for _, raw := range []string{
		"POST " + tokensPath(f.acct.Sid) + " HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!notbase64\r\nContent-Length: 0\r\n\r\n",
		"POST " + tokensPath(f.acct.Sid) + " HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\nContent-Length: 0\r\n\r\n",
		"POST " + tokensPath(f.acct.Sid) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nTtl=",
		"GARBAGE\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, raw)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			if res.StatusCode >= 500 {
				t.Errorf("%q: status %d", raw, res.StatusCode)
			}
			res.Body.Close()
		}
		c.Close()
	}
	a := f.acct
	if r := f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}); r.status != 201 {
		t.Fatalf("server stopped serving: %d", r.status)
	}
}

// TestRateLimit: failed authentications from one client are limited; once
// over, even good credentials get 429 until the bucket refills. Every
// failure is counted.
func TestRateLimit(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	bad := request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: "00000000000000000000000000000000"}
	good := request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}
	for i := 0; i < 20; i++ {
		if r := f.do(t, bad); r.status != 401 {
			t.Fatalf("failure %d: %d", i+1, r.status)
		}
	}
	r := f.do(t, good)
	checkError(t, r, 429, 20429)
	golden(t, "error_429", r)
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=wrong_secret"); got != 20 {
		t.Errorf("auth_failures{wrong_secret} = %v, want 20", got)
	}
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=rate_limited"); got != 1 {
		t.Errorf("auth_failures{rate_limited} = %v, want 1", got)
	}
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=missing"); got != 0 {
		t.Errorf("auth_failures{missing} = %v, want a pre-created 0", got)
	}
	// 10 a second: after 150ms one failure is allowed again.
	f.clock.Advance(150 * time.Millisecond)
	if r := f.do(t, good); r.status != 201 {
		t.Fatalf("after refilling: %d", r.status)
	}
	if got := f.counter(t, "traverse_issuer_requests_total", "route=tokens", "code=429"); got != 1 {
		t.Errorf("requests_total{tokens,429} = %v", got)
	}
}
