package auth

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testAuthToken = "authtoken0000000000000000000000a"

func authTokens(sid string) ([]byte, error) {
	if sid != testAccount {
		return nil, errors.New("unknown account")
	}
	return []byte(testAuthToken), nil
}

// capabilityVectorInputs are the three capability vectors' inputs.
var capabilityVectorInputs = map[string]CapabilityToken{
	"capability-incoming-space": {
		AccountSid: testAccount, TTL: time.Hour, LaxClientNames: true,
		Scopes: []Scope{IncomingClientScope{ClientName: "alice smith"}},
	},
	"capability-outgoing-params": {
		AccountSid: testAccount, TTL: 300 * time.Second,
		Scopes: []Scope{OutgoingClientScope{
			ApplicationSid: "AP00000000000000000000000000000001", ClientName: "alice",
			Params: []Param{{"foo", "bar baz"}, {"a&b", "c=d"}},
		}},
	},
	"capability-combined": {
		AccountSid: testAccount,
		Scopes: []Scope{
			IncomingClientScope{ClientName: "alice"},
			OutgoingClientScope{ApplicationSid: "AP00000000000000000000000000000001"},
			EventStreamScope{Filters: []Param{{"foo", "bar"}}},
			EventStreamScope{},
		},
	},
}

// TestCapabilityTokenMatchesTwilioNode: same inputs and clock, same JWT.
func TestCapabilityTokenMatchesTwilioNode(t *testing.T) {
	vs := loadVectors(t)
	for name, ct := range capabilityVectorInputs {
		t.Run(name, func(t *testing.T) {
			v := vs[name]
			tok, err := ct.Sign([]byte(v.Inputs.AuthToken), time.Unix(v.Inputs.Now, 0))
			if err != nil {
				t.Fatal(err)
			}
			if tok != v.JWT {
				h, p := segments(t, tok)
				t.Errorf("jwt differs\n got %s %s\nwant %s %s", h, p, v.Header, v.Payload)
			}
		})
	}
}

// TestVerifyCapabilityVectorsScopes parses the vectors' scopes back to the
// inputs that minted them.
func TestVerifyCapabilityVectorsScopes(t *testing.T) {
	vs := loadVectors(t)
	for name, ct := range capabilityVectorInputs {
		t.Run(name, func(t *testing.T) {
			v := vs[name]
			now := time.Unix(v.Inputs.Now, 0)
			c, err := VerifyCapabilityToken(v.JWT, authTokens, now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Scopes, ct.Scopes) {
				t.Errorf("scopes\n got %#v\nwant %#v", c.Scopes, ct.Scopes)
			}
			if !c.ExpiresAt.Equal(now.Add(time.Duration(v.Inputs.TTL) * time.Second)) {
				t.Errorf("exp %v", c.ExpiresAt)
			}
		})
	}
	c, err := VerifyCapabilityToken(vs["capability-combined"].JWT, authTokens, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if in, ok := c.Incoming(); !ok || in.ClientName != "alice" {
		t.Errorf("incoming %v %v", in, ok)
	}
	if out, ok := c.Outgoing(); !ok || out.ApplicationSid != "AP00000000000000000000000000000001" || out.ClientName != "" {
		t.Errorf("outgoing %v %v", out, ok)
	}
}

func TestEncodeURIComponent(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"alice":              "alice",
		"alice smith":        "alice%20smith",
		"A-Za-z0-9-_.!~*'()": "A-Za-z0-9-_.!~*'()",
		"a+b&c=d/e?f#g%":     "a%2Bb%26c%3Dd%2Fe%3Ff%23g%25",
		"é€":                 "%C3%A9%E2%82%AC",
	} {
		if got := EncodeURIComponent(in); got != want {
			t.Errorf("EncodeURIComponent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCapabilityRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	ct := CapabilityToken{AccountSid: testAccount, TTL: 10 * time.Minute, Scopes: []Scope{
		OutgoingClientScope{ApplicationSid: "AP1", ClientName: "bob_2", Params: []Param{{"z", "1"}, {"a", "x+y %"}, {"é", ""}}},
		EventStreamScope{Filters: []Param{{"b", "2"}, {"a", "1"}}},
		RawScope("scope:future:thing?x=1"),
	}}
	tok, err := ct.Sign([]byte(testAuthToken), now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyCapabilityToken(tok, authTokens, now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Scopes, ct.Scopes) {
		t.Errorf("scopes\n got %#v\nwant %#v", c.Scopes, ct.Scopes)
	}
}

func TestCapabilitySignRefuses(t *testing.T) {
	now := time.Unix(1700000000, 0)
	cases := []struct {
		name string
		ct   CapabilityToken
		code int
	}{
		{"client name with space", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{IncomingClientScope{"alice smith"}}}, CodeTokenGrants},
		{"empty client name", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{IncomingClientScope{}}}, CodeTokenGrants},
		{"outgoing client name with dash", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{OutgoingClientScope{ApplicationSid: "AP1", ClientName: "a-b"}}}, CodeTokenGrants},
		{"outgoing without app", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{OutgoingClientScope{}}}, CodeTokenGrants},
		{"no scope", CapabilityToken{AccountSid: testAccount}, CodeTokenGrants},
		{"nil scope", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{nil}}, CodeTokenGrants},
		{"raw scope with space", CapabilityToken{AccountSid: testAccount, Scopes: []Scope{RawScope("scope:a b")}}, CodeTokenGrants},
		{"bad account", CapabilityToken{AccountSid: testKey, Scopes: []Scope{IncomingClientScope{"a"}}}, CodeTokenIssuer},
		{"ttl 25h", CapabilityToken{AccountSid: testAccount, TTL: 25 * time.Hour, Scopes: []Scope{IncomingClientScope{"a"}}}, CodeTokenTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.ct.Sign([]byte(testAuthToken), now); CodeOf(err) != tc.code {
				t.Fatalf("got %v, want code %d", err, tc.code)
			}
		})
	}
}

func TestVerifyCapabilityTokenAttacks(t *testing.T) {
	now := time.Unix(1700000000, 0)
	hs256 := hmacWith(jwt.SigningMethodHS256, testAuthToken)
	const hdr = `{"alg":"HS256","typ":"JWT"}`
	const scope = `"scope":"scope:client:incoming?clientName=alice"`
	good := `{` + scope + `,"iss":"` + testAccount + `","exp":1700003600,"iat":1700000000}`
	valid := forge(hdr, good, hs256)
	if _, err := VerifyCapabilityToken(valid, authTokens, now); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		token  string
		lookup AuthTokenLookup
		code   int
	}{
		{"alg none", forge(`{"alg":"none","typ":"JWT"}`, good, nil), authTokens, CodeTokenHeaderFields},
		{"alg HS512", forge(`{"alg":"HS512","typ":"JWT"}`, good, hmacWith(jwt.SigningMethodHS512, testAuthToken)), authTokens, CodeTokenHeaderFields},
		{"alg RS256 with HMAC", forge(`{"alg":"RS256","typ":"JWT"}`, good, hs256), authTokens, CodeTokenHeaderFields},
		{"iss an API key", forge(hdr, `{`+scope+`,"iss":"`+testKey+`","exp":1700003600}`, hs256), authTokens, CodeTokenIssuer},
		{"unknown account", forge(hdr, `{`+scope+`,"iss":"`+testAccount2+`","exp":1700003600}`, hs256), authTokens, CodeTokenAuth},
		{"suspended account", valid, func(string) ([]byte, error) { return nil, errors.New("suspended") }, CodeTokenAuth},
		{"wrong auth token", forge(hdr, good, hmacWith(jwt.SigningMethodHS256, "other")), authTokens, CodeTokenSignature},
		{"expired", forge(hdr, `{`+scope+`,"iss":"`+testAccount+`","exp":1699990000,"iat":1699980000}`, hs256), authTokens, CodeTokenExpired},
		{"iat in the future", forge(hdr, `{`+scope+`,"iss":"`+testAccount+`","exp":1700003600,"iat":1700000100}`, hs256), authTokens, CodeTokenNotYetValid},
		{"exp 25h ahead", forge(hdr, `{`+scope+`,"iss":"`+testAccount+`","exp":1700090000,"iat":1700000000}`, hs256), authTokens, CodeTokenTooLong},
		{"no scope", forge(hdr, `{"iss":"`+testAccount+`","exp":1700003600}`, hs256), authTokens, CodeTokenGrants},
		{"empty scope", forge(hdr, `{"scope":" ","iss":"`+testAccount+`","exp":1700003600}`, hs256), authTokens, CodeTokenGrants},
		{"incoming without name", forge(hdr, `{"scope":"scope:client:incoming","iss":"`+testAccount+`","exp":1700003600}`, hs256), authTokens, CodeTokenGrants},
		{"bad escaping", forge(hdr, `{"scope":"scope:client:incoming?clientName=%zz","iss":"`+testAccount+`","exp":1700003600}`, hs256), authTokens, CodeTokenGrants},
		{"stream other path", forge(hdr, `{"scope":"scope:stream:subscribe?path=/x","iss":"`+testAccount+`","exp":1700003600}`, hs256), authTokens, CodeTokenGrants},
		{"truncated", valid[:len(valid)/2], authTokens, CodeTokenInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := VerifyCapabilityToken(tc.token, tc.lookup, now); CodeOf(err) != tc.code {
				t.Fatalf("got %+v %v, want code %d", c, err, tc.code)
			}
		})
	}
}
