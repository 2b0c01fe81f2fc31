package issuer_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// twilioClient is twilio-go as an application uses it, with username:password
// as Basic credentials acting on accountSid, sent to the fixture's server.
func (f *fixture) twilioClient(t *testing.T, username, password, accountSid string) *twilio.RestClient {
	t.Helper()
	t.Setenv("TWILIO_EDGE", "")
	t.Setenv("TWILIO_REGION", "")
	target, err := url.Parse(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{
		Credentials: client.NewCredentials(username, password),
		HTTPClient: &http.Client{
			Transport: rewriteTransport{target: target, base: f.srv.Client().Transport},
			Timeout:   10 * time.Second,
		},
	}
	c.SetAccountSid(accountSid)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c, AccountSid: accountSid})
}

func TestTwilioGoCreateToken(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	k, err := f.svc.CreateKey(t.Context(), a.Sid, "twilio-go")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, user, pass string
		ttl              *int
		wantTTL          int
	}{
		{"auth token, default ttl", a.Sid, a.AuthToken, nil, 86400},
		{"auth token, ttl 3600", a.Sid, a.AuthToken, ptr(3600), 3600},
		{"api key, ttl 1", k.Sid, k.Secret, ptr(1), 1},
		{"api key, ttl 86400", k.Sid, k.Secret, ptr(86400), 86400},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := f.twilioClient(t, c.user, c.pass, a.Sid).Api
			tok, err := api.CreateToken(&openapi.CreateTokenParams{Ttl: c.ttl})
			if err != nil {
				t.Fatal(err)
			}
			if deref(tok.AccountSid) != a.Sid {
				t.Errorf("account_sid %q", deref(tok.AccountSid))
			}
			if deref(tok.Ttl) != strconv.Itoa(c.wantTTL) {
				t.Errorf("ttl %q, want %d", deref(tok.Ttl), c.wantTTL)
			}
			for _, d := range []*string{tok.DateCreated, tok.DateUpdated} {
				if _, err := time.Parse(time.RFC1123Z, deref(d)); err != nil {
					t.Errorf("date %q is not RFC 2822: %v", deref(d), err)
				}
			}
			if tok.IceServers == nil || len(*tok.IceServers) != len(testURIs) {
				t.Fatalf("ice_servers %+v", tok.IceServers)
			}
			for i, s := range *tok.IceServers {
				if s.Url != testURIs[i] || s.Urls != testURIs[i] {
					t.Errorf("ice_servers[%d] url %q urls %q, want %q", i, s.Url, s.Urls, testURIs[i])
				}
				if i > 0 && (s.Username != deref(tok.Username) || s.Credential != deref(tok.Password)) {
					t.Errorf("ice_servers[%d] credential missing", i)
				}
				if i == 0 && (s.Username != "" || s.Credential != "") {
					t.Errorf("STUN entry carries a credential")
				}
			}
			checkCredential(t, f, a.Sid, deref(tok.Username), deref(tok.Password), time.Duration(c.wantTTL)*time.Second)
		})
	}
}

func TestTwilioGoErrors(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	other, err := f.svc.CreateAccount(t.Context(), "other", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, user, pass, path string
		ttl                    *int
		status, code           int
	}{
		{"wrong auth token", a.Sid, "0123456789abcdef0123456789abcdef", a.Sid, nil, 401, 20003},
		{"unknown account", "AC0123456789abcdef0123456789abcdef", a.AuthToken, "AC0123456789abcdef0123456789abcdef", nil, 401, 20003},
		{"other account in the path", a.Sid, a.AuthToken, other.Sid, nil, 404, 20404},
		{"nonexistent account in the path", a.Sid, a.AuthToken, "AC0123456789abcdef0123456789abcdef", nil, 404, 20404},
		{"ttl 0", a.Sid, a.AuthToken, a.Sid, ptr(0), 400, 20001},
		{"ttl 86401", a.Sid, a.AuthToken, a.Sid, ptr(86401), 400, 20001},
		{"ttl -1", a.Sid, a.AuthToken, a.Sid, ptr(-1), 400, 20001},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := f.twilioClient(t, c.user, c.pass, c.path).Api
			_, err := api.CreateToken(&openapi.CreateTokenParams{Ttl: c.ttl})
			var te *client.TwilioRestError
			if !errors.As(err, &te) {
				t.Fatalf("got %v (%T), want *client.TwilioRestError", err, err)
			}
			if te.Status != c.status || te.Code != c.code || te.MoreInfo != "https://www.twilio.com/docs/errors/"+strconv.Itoa(c.code) || te.Message == "" {
				t.Fatalf("got %+v, want status %d code %d", te, c.status, c.code)
			}
		})
	}
}

func TestTwilioGoKeys(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	api := f.twilioClient(t, a.Sid, a.AuthToken, a.Sid).Api
	nk, err := api.CreateNewKey(&openapi.CreateNewKeyParams{FriendlyName: ptr("from twilio-go")})
	if err != nil {
		t.Fatal(err)
	}
	if deref(nk.FriendlyName) != "from twilio-go" || len(deref(nk.Secret)) != 32 {
		t.Fatalf("new key %+v", nk)
	}
	for i := 0; i < 3; i++ {
		if _, err := api.CreateNewKey(nil); err != nil {
			t.Fatal(err)
		}
	}
	// ListKey pages through next_page_uri.
	keys, err := api.ListKey(&openapi.ListKeyParams{PageSize: ptr(2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Fatalf("listed %d keys, want 4", len(keys))
	}
	got, err := api.FetchKey(deref(nk.Sid), nil)
	if err != nil || deref(got.Sid) != deref(nk.Sid) {
		t.Fatalf("fetch: %+v %v", got, err)
	}
	// The new key mints with twilio-go.
	keyAPI := f.twilioClient(t, deref(nk.Sid), deref(nk.Secret), a.Sid).Api
	if _, err := keyAPI.CreateToken(nil); err != nil {
		t.Fatal(err)
	}
	if err := api.DeleteKey(deref(nk.Sid), nil); err != nil {
		t.Fatal(err)
	}
	_, err = keyAPI.CreateToken(nil)
	var te *client.TwilioRestError
	if !errors.As(err, &te) || te.Status != 401 || te.Code != 20003 {
		t.Fatalf("token with the deleted key: %v", err)
	}
	_, err = api.FetchKey(deref(nk.Sid), nil)
	if !errors.As(err, &te) || te.Status != 404 || te.Code != 20404 {
		t.Fatalf("fetch of the deleted key: %v", err)
	}
}

func TestTwilioGoSubaccount(t *testing.T) {
	f := newFixture(t)
	a := f.acct
	api := f.twilioClient(t, a.Sid, a.AuthToken, a.Sid).Api
	sub, err := api.CreateAccount(&openapi.CreateAccountParams{FriendlyName: ptr("tenant")})
	if err != nil {
		t.Fatal(err)
	}
	if deref(sub.OwnerAccountSid) != a.Sid || deref(sub.Status) != "active" || len(deref(sub.AuthToken)) != 32 {
		t.Fatalf("subaccount %+v", sub)
	}
	tok, err := f.twilioClient(t, deref(sub.Sid), deref(sub.AuthToken), deref(sub.Sid)).Api.CreateToken(nil)
	if err != nil || deref(tok.AccountSid) != deref(sub.Sid) {
		t.Fatalf("subaccount token: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
