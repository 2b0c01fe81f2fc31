package issuer_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
)

// createSubaccount creates a subaccount of f.acct over HTTP.
func createSubaccount(t *testing.T, f *fixture) issuer.AccountResource {
	t.Helper()
	a := f.acct
	r := f.do(t, request{method: "POST", path: "/2010-04-01/Accounts.json", user: a.Sid, pass: a.AuthToken, form: "FriendlyName=tenant"})
	if r.status != http.StatusCreated {
		t.Fatalf("create subaccount: %d %s", r.status, r.body)
	}
	var sub issuer.AccountResource
	if err := json.Unmarshal(r.body, &sub); err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestTokensRateLimitedPerAccount: with issuer.tokens_per_second 1 and a
// burst of 3, an account's fourth credential in a second is refused with 429
// and code 20429, over the Tokens resource and /v1/ice-servers alike;
// another account (its subaccount) is unaffected, and a second later the
// account mints again.
func TestTokensRateLimitedPerAccount(t *testing.T) {
	f := newFixture(t)
	f.restart(t, func(o *issuer.Options) { o.TokensPerSecond, o.TokensBurst = 1, 3 })
	a := f.acct
	sub := createSubaccount(t, f)
	for i := 0; i < 3; i++ {
		if r := f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}); r.status != http.StatusCreated {
			t.Fatalf("token %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken})
	checkError(t, r, http.StatusTooManyRequests, issuer.CodeTooManyRequests)
	k := f.newKey(t, a.Sid)
	checkError(t, f.ice(t, iceReq{bearer: f.accessToken(t, k, "alice", time.Hour, nil)}), http.StatusTooManyRequests, issuer.CodeTooManyRequests)
	if got := f.counter(t, "traverse_issuer_mint_rate_limited_total"); got != 2 {
		t.Errorf("mint_rate_limited_total = %v, want 2", got)
	}
	// The subaccount has its own bucket, even when its parent mints for it.
	if r := f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: a.Sid, pass: a.AuthToken}); r.status != http.StatusCreated {
		t.Fatalf("subaccount's token: %d %s", r.status, r.body)
	}
	f.clock.Advance(time.Second)
	if r := f.do(t, request{method: "POST", path: tokensPath(a.Sid), user: a.Sid, pass: a.AuthToken}); r.status != http.StatusCreated {
		t.Fatalf("a second later: %d %s", r.status, r.body)
	}
}

// TestParentSuspensionReachesSubaccounts: a suspended parent suspends its
// subaccount on every route — Tokens (auth token and API key), Keys,
// Accounts, /v1/ice-servers (Access and Capability Tokens) — and
// reactivating the parent brings the subaccount back.
func TestParentSuspensionReachesSubaccounts(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.acct
	sub := createSubaccount(t, f)
	subAcct, err := f.store.GetAccount(ctx, sub.Sid)
	if err != nil {
		t.Fatal(err)
	}
	key := f.newKey(t, sub.Sid)
	access := f.accessToken(t, key, "alice", time.Hour, nil)
	capability, err := auth.CapabilityToken{
		AccountSid: sub.Sid, TTL: time.Hour, Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "carol"}},
	}.Sign([]byte(subAcct.AuthToken), t0)
	if err != nil {
		t.Fatal(err)
	}

	routes := []struct {
		name string
		call func() response
		ok   int
	}{
		{"tokens with the auth token", func() response {
			return f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: sub.Sid, pass: subAcct.AuthToken})
		}, http.StatusCreated},
		{"tokens with an API key", func() response {
			return f.do(t, request{method: "POST", path: tokensPath(sub.Sid), user: key.Sid, pass: key.Secret})
		}, http.StatusCreated},
		{"keys: create", func() response {
			return f.do(t, request{method: "POST", path: keysPath(sub.Sid), user: sub.Sid, pass: subAcct.AuthToken, form: "FriendlyName=more"})
		}, http.StatusCreated},
		{"keys: list", func() response {
			return f.do(t, request{method: "GET", path: keysPath(sub.Sid), user: sub.Sid, pass: subAcct.AuthToken})
		}, http.StatusOK},
		{"keys: fetch", func() response {
			return f.do(t, request{method: "GET", path: "/2010-04-01/Accounts/" + sub.Sid + "/Keys/" + key.Sid + ".json", user: sub.Sid, pass: subAcct.AuthToken})
		}, http.StatusOK},
		// A subaccount may not create subaccounts (403), but a suspended
		// tree does not authenticate at all (401).
		{"accounts: create", func() response {
			return f.do(t, request{method: "POST", path: "/2010-04-01/Accounts.json", user: sub.Sid, pass: subAcct.AuthToken})
		}, http.StatusForbidden},
		{"ice-servers with an Access Token", func() response { return f.ice(t, iceReq{bearer: access}) }, http.StatusCreated},
		{"ice-servers with a Capability Token", func() response { return f.ice(t, iceReq{bearer: capability}) }, http.StatusCreated},
	}
	check := func(state string, suspended bool) {
		t.Helper()
		for _, rt := range routes {
			r := rt.call()
			switch {
			case suspended && r.status != http.StatusUnauthorized:
				t.Errorf("%s, %s: %d %s, want 401", state, rt.name, r.status, r.body)
			case !suspended && r.status != rt.ok:
				t.Errorf("%s, %s: %d %s, want %d", state, rt.name, r.status, r.body, rt.ok)
			}
		}
	}
	check("parent active", false)
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	check("parent suspended", true)
	if got := f.counter(t, "traverse_issuer_auth_failures_total", "reason=suspended"); got < float64(len(routes)) {
		t.Errorf("auth_failures{suspended} = %v, want at least %d", got, len(routes))
	}
	if _, err := f.svc.SetAccountStatus(ctx, a.Sid, store.StatusActive); err != nil {
		t.Fatal(err)
	}
	check("parent reactivated", false)
}
