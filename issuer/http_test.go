package issuer_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/issuer"
)

func TestTokenGolden(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	cases := []struct {
		name string
		q    request
	}{
		{"token_default_ttl", request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}},
		{"token_ttl_3600", request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken, form: "Ttl=3600"}},
		{"token_ttl_3600", request{method: "POST", path: strings.TrimSuffix(tokensPath(a.Sid), ".json"), user: a.Sid, pass: a.AuthToken, form: "Ttl=3600"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.do(t, c.q)
			if r.status != http.StatusCreated {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			golden(t, c.name, r)
		})
	}
}

func TestTokenFields(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	r := f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken, form: "Ttl=600"})
	if r.status != http.StatusCreated || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", r.status, r.header.Get("Content-Type"))
	}
	// Exactly Twilio's keys, ttl a string.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	want := "account_sid date_created date_updated ice_servers password ttl username"
	if got := strings.Join(sorted(keys), " "); got != want {
		t.Fatalf("keys %q, want %q", got, want)
	}
	if string(raw["ttl"]) != `"600"` {
		t.Fatalf("ttl = %s, want \"600\"", raw["ttl"])
	}
	var tok issuer.TokenResource
	if err := json.Unmarshal(r.body, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.DateCreated != "Fri, 01 May 2020 01:42:57 +0000" || tok.DateUpdated != tok.DateCreated {
		t.Fatalf("dates %q %q", tok.DateCreated, tok.DateUpdated)
	}
	checkCredential(t, f, tok.AccountSid, tok.Username, tok.Password, 600*time.Second)
	wantURIs := []string{
		"stun:203.0.113.7:3478",
		"turn:203.0.113.7:3478?transport=udp",
		"turn:203.0.113.7:3478?transport=tcp",
		"turn:203.0.113.7:443?transport=tcp",
		"turns:203.0.113.7:443?transport=tcp",
	}
	if len(tok.ICEServers) != len(wantURIs) {
		t.Fatalf("%d ice servers, want %d", len(tok.ICEServers), len(wantURIs))
	}
	for i, s := range tok.ICEServers {
		if s.URL != wantURIs[i] || s.URLs != wantURIs[i] {
			t.Errorf("ice_servers[%d] = %q/%q, want %q", i, s.URL, s.URLs, wantURIs[i])
		}
		turn := i > 0
		if turn && (s.Username != tok.Username || s.Credential != tok.Password) {
			t.Errorf("ice_servers[%d] lacks the credential", i)
		}
		if !turn && (s.Username != "" || s.Credential != "") {
			t.Errorf("the STUN entry carries a credential")
		}
	}
	if got := f.counter(t, "traverse_issuer_tokens_issued_total"); got != 1 {
		t.Fatalf("tokens_issued_total = %v, want 1", got)
	}
	if got := f.counter(t, "traverse_issuer_requests_total", "route=tokens", "code=201"); got != 1 {
		t.Fatalf("requests_total{tokens,201} = %v, want 1", got)
	}
}

// checkCredential verifies a minted TURN credential as the relay would: it
// holds now, names the account, and expires after ttl (plus the clock skew).
func checkCredential(t *testing.T, f *fixture, accountSid, username, password string, ttl time.Duration) {
	t.Helper()
	user, err := f.secrets.Verify(username, password, f.clock.Now(), policy)
	if err != nil {
		t.Fatalf("Verify(%q): %v", username, err)
	}
	sid, random, ok := strings.Cut(user, ":")
	if !ok || sid != accountSid || len(random) < 8 {
		t.Fatalf("credential user %q, want %s:<random>", user, accountSid)
	}
	if _, err := f.secrets.Verify(username, password+"x", f.clock.Now(), policy); err == nil {
		t.Fatal("a wrong password verified")
	}
	justBefore := f.clock.Now().Add(ttl - time.Second)
	if _, err := f.secrets.Verify(username, password, justBefore, policy); err != nil {
		t.Fatalf("credential refused 1s before its expiry: %v", err)
	}
	after := f.clock.Now().Add(ttl + policy.ClockSkew)
	if _, err := f.secrets.Verify(username, password, after, policy); err == nil {
		t.Fatal("credential still valid after its ttl")
	}
}

func TestKeysGolden(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	withAuth := func(q request) request { q.user, q.pass = a.Sid, a.AuthToken; return q }

	r := f.do(t, withAuth(request{method: "POST", path: keysPath(a.Sid), form: "FriendlyName=ci+key"}))
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	golden(t, "key_create", r)
	var k issuer.KeyResource
	if err := json.Unmarshal(r.body, &k); err != nil {
		t.Fatal(err)
	}
	if !issuer.ValidSid("SK", k.Sid) || len(k.Secret) != 32 {
		t.Fatalf("key %q secret %q", k.Sid, k.Secret)
	}

	r = f.do(t, withAuth(request{method: "GET", path: keysPath(a.Sid)}))
	golden(t, "key_list", r)
	if strings.Contains(string(r.body), k.Secret) {
		t.Fatal("the key list shows the secret")
	}

	keyPath := "/2010-04-01/Accounts/" + a.Sid + "/Keys/" + k.Sid + ".json"
	r = f.do(t, withAuth(request{method: "GET", path: keyPath}))
	golden(t, "key_fetch", r)
	if strings.Contains(string(r.body), k.Secret) {
		t.Fatal("fetching the key shows the secret")
	}

	// The key mints tokens for its account.
	r = f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: k.Sid, pass: k.Secret, form: "Ttl=60"})
	golden(t, "token_with_key", r)

	r = f.do(t, withAuth(request{method: "DELETE", path: keyPath}))
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	// Deleted: it authenticates nothing, and is gone.
	r = f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: k.Sid, pass: k.Secret})
	if r.status != http.StatusUnauthorized {
		t.Fatalf("token with a deleted key: %d", r.status)
	}
	r = f.do(t, withAuth(request{method: "GET", path: keyPath}))
	golden(t, "key_fetch_deleted", r)
	r = f.do(t, withAuth(request{method: "DELETE", path: keyPath}))
	if r.status != http.StatusNotFound {
		t.Fatalf("second delete: %d", r.status)
	}
}

func TestKeyListPaging(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	for i := 0; i < 5; i++ {
		if _, err := f.svc.CreateKey(t.Context(), a.Sid, ""); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Second)
	}
	var seen []string
	path := keysPath(a.Sid) + "?PageSize=2"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		r := f.do(t, request{method: "GET", path: path, user: a.Sid, pass: a.AuthToken})
		var l issuer.KeyList
		if err := json.Unmarshal(r.body, &l); err != nil || r.status != 200 {
			t.Fatalf("%d %s %v", r.status, r.body, err)
		}
		for _, k := range l.Keys {
			seen = append(seen, k.Sid)
		}
		path = ""
		if l.NextPageURI != nil {
			path = *l.NextPageURI
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d keys, want 5", len(seen))
	}
	r := f.do(t, request{method: "GET", path: keysPath(a.Sid) + "?PageSize=0", user: a.Sid, pass: a.AuthToken})
	if r.status != http.StatusBadRequest {
		t.Fatalf("PageSize=0: %d", r.status)
	}
}

func TestSubaccounts(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	r := f.do(t, request{method: "POST", path: "/2010-04-01/Accounts.json", user: a.Sid, pass: a.AuthToken, form: "FriendlyName=tenant+1"})
	if r.status != http.StatusCreated {
		t.Fatalf("create subaccount: %d %s", r.status, r.body)
	}
	golden(t, "subaccount_create", r)
	var sub issuer.AccountResource
	if err := json.Unmarshal(r.body, &sub); err != nil {
		t.Fatal(err)
	}
	// The parent mints for its subaccount; the subaccount for itself.
	for _, c := range []struct{ user, pass string }{{a.Sid, a.AuthToken}, {sub.Sid, sub.AuthToken}} {
		r = f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: c.user, pass: c.pass})
		if r.status != http.StatusCreated || !strings.Contains(string(r.body), `"account_sid":"`+sub.Sid+`"`) {
			t.Fatalf("token for the subaccount as %s: %d %s", c.user, r.status, r.body)
		}
	}
	// The subaccount cannot act on its parent, nor own subaccounts.
	r = f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: sub.Sid, pass: sub.AuthToken})
	if r.status != http.StatusNotFound {
		t.Fatalf("subaccount on its parent: %d", r.status)
	}
	r = f.do(t, request{method: "POST", path: "/2010-04-01/Accounts.json", user: sub.Sid, pass: sub.AuthToken})
	if r.status != http.StatusForbidden {
		t.Fatalf("subaccount creating a subaccount: %d %s", r.status, r.body)
	}
	// A suspended subaccount: the parent gets 403 20005, the subaccount 401.
	if _, err := f.svc.SetAccountStatus(t.Context(), sub.Sid, "suspended"); err != nil {
		t.Fatal(err)
	}
	r = f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: a.Sid, pass: a.AuthToken})
	if r.status != http.StatusForbidden || !strings.Contains(string(r.body), `"code":20005`) {
		t.Fatalf("parent on a suspended subaccount: %d %s", r.status, r.body)
	}
	r = f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: sub.Sid, pass: sub.AuthToken})
	if r.status != http.StatusUnauthorized {
		t.Fatalf("suspended subaccount: %d", r.status)
	}
}

func TestSuspendAndRotate(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.acct
	k, err := f.svc.CreateKey(ctx, a.Sid, "k")
	if err != nil {
		t.Fatal(err)
	}
	mint := func(user, pass string) int {
		return f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: user, pass: pass}).status
	}
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, "suspended"); err != nil {
		t.Fatal(err)
	}
	if s1, s2 := mint(a.Sid, a.AuthToken), mint(k.Sid, k.Secret); s1 != 401 || s2 != 401 {
		t.Fatalf("suspended account: auth token %d, key %d; want 401, 401", s1, s2)
	}
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, "active"); err != nil {
		t.Fatal(err)
	}
	rotated, err := f.svc.RotateAuthToken(ctx, a.Sid)
	if err != nil {
		t.Fatal(err)
	}
	if s := mint(a.Sid, a.AuthToken); s != 401 {
		t.Fatalf("old auth token after rotation: %d", s)
	}
	if s1, s2 := mint(a.Sid, rotated.AuthToken), mint(k.Sid, k.Secret); s1 != 201 || s2 != 201 {
		t.Fatalf("after reactivation and rotation: %d, %d", s1, s2)
	}
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=suspended"); got != 2 {
		t.Fatalf("auth_failures{suspended} = %v, want 2", got)
	}
}

// TestDeletedKeyOnOtherNode: two issuer nodes share one database; a key
// deleted through one fails at once on the other.
func TestDeletedKeyOnOtherNode(t *testing.T) {
	a := newFixture(t)
	b := newNode(t, a.dir)
	if b.acct.Sid != a.acct.Sid {
		t.Fatal("the second node made another primary account")
	}
	k, err := a.svc.CreateKey(t.Context(), a.acct.Sid, "shared")
	if err != nil {
		t.Fatal(err)
	}
	q := request{method: "POST", path: tokensPath(a.acct.Sid), user: k.Sid, pass: k.Secret}
	if r := b.do(t, q); r.status != http.StatusCreated {
		t.Fatalf("node b with the key: %d", r.status)
	}
	if err := a.svc.DeleteKey(t.Context(), a.acct.Sid, k.Sid); err != nil {
		t.Fatal(err)
	}
	if r := b.do(t, q); r.status != http.StatusUnauthorized {
		t.Fatalf("node b right after the delete on node a: %d", r.status)
	}
}

func TestEnsurePrimaryAccount(t *testing.T) {
	f := newFixture(t)
	a, created, err := f.svc.EnsurePrimaryAccount(t.Context())
	if err != nil || created || a.Sid != f.acct.Sid {
		t.Fatalf("second EnsurePrimaryAccount: %s created=%v %v", a.Sid, created, err)
	}
	if !issuer.ValidSid("AC", a.Sid) || len(a.AuthToken) != 32 || a.Status != "active" {
		t.Fatalf("primary account %+v", a)
	}
	msg := issuer.FirstStartMessage(a, "http://127.0.0.1:8080", "")
	if !strings.Contains(msg, "curl -X POST -u "+a.Sid+":"+a.AuthToken+" http://127.0.0.1:8080/2010-04-01/Accounts/"+a.Sid+"/Tokens.json") {
		t.Fatalf("first-start message lacks the curl line:\n%s", msg)
	}
	msg = issuer.FirstStartMessage(a, "https://127.0.0.1:8080", "/data/dev-cert.pem")
	if !strings.Contains(msg, "curl --cacert /data/dev-cert.pem -X POST -u "+a.Sid+":"+a.AuthToken+" https://127.0.0.1:8080/") {
		t.Fatalf("first-start message lacks --cacert:\n%s", msg)
	}
}

// TestMaxTTLCaps: with auth.max_ttl below 24h, the ttl is lowered and says so.
func TestMaxTTLCaps(t *testing.T) {
	f := newFixture(t)
	svc, err := issuer.New(issuer.Options{
		Store:   f.store,
		Secrets: func() *auth.Secrets { return f.secrets },
		MaxTTL:  time.Hour,
		Now:     f.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := svc.CreateToken(t.Context(), f.acct.Sid, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TTL != time.Hour || tok.Resource().TTL != "3600" {
		t.Fatalf("ttl %s", tok.TTL)
	}
	if _, err := svc.CreateToken(t.Context(), "AC00000000000000000000000000000000", time.Hour); err == nil {
		t.Fatal("token for an unknown account")
	}
}

// TestNoSecretsInLogs runs every operation with debug logging and greps the
// logs for the secrets involved.
func TestNoSecretsInLogs(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	r := f.do(t, request{method: "POST", path: keysPath(a.Sid), user: a.Sid, pass: a.AuthToken})
	var k issuer.KeyResource
	json.Unmarshal(r.body, &k)
	r = f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: k.Sid, pass: k.Secret})
	var tok issuer.TokenResource
	json.Unmarshal(r.body, &tok)
	f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: "wrong-token-000"})
	f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.AuthToken, pass: a.AuthToken}) // token typed as user
	f.do(t, request{method: "POST", path: "/2010-04-01/Accounts.json", user: a.Sid, pass: a.AuthToken})
	if f.logs.Len() == 0 {
		t.Fatal("nothing was logged; the check proves nothing")
	}
	for _, e := range f.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		for _, secret := range []string{a.AuthToken, k.Secret, tok.Password, tok.Username, "wrong-token-000", testSecret} {
			if secret != "" && strings.Contains(line, secret) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

func TestNotFoundRoutes(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	for _, p := range []string{"/", "/2010-04-01/Accounts/" + a.Sid + "/Calls.json", "/v1/whatever"} {
		r := f.do(t, request{method: "PUT", path: p, user: a.Sid, pass: a.AuthToken})
		if r.status != http.StatusNotFound || !strings.Contains(string(r.body), `"code":20404`) {
			t.Fatalf("%s: %d %s", p, r.status, r.body)
		}
	}
}
