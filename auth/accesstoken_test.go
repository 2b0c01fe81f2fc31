package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testAccount  = "AC00000000000000000000000000000001"
	testAccount2 = "AC00000000000000000000000000000002"
	testKey      = "SK00000000000000000000000000000001"
	testKey2     = "SK00000000000000000000000000000002"
	testSecret   = "apisecret000000000000000000000001"
	testSecret2  = "apisecret000000000000000000000002"
)

// vector is one entry of testdata/twilio-node-vectors.json.
type vector struct {
	Name   string `json:"name"`
	Inputs struct {
		Kind       string `json:"kind"`
		AccountSid string `json:"account_sid"`
		KeySid     string `json:"key_sid"`
		Secret     string `json:"secret"`
		AuthToken  string `json:"auth_token"`
		TTL        int64  `json:"ttl"`
		Now        int64  `json:"now"`
	} `json:"inputs"`
	Header  string `json:"header"`
	Payload string `json:"payload"`
	JWT     string `json:"jwt"`
}

func loadVectors(t testing.TB) map[string]vector {
	t.Helper()
	data, err := os.ReadFile("testdata/twilio-node-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]vector, len(vs))
	for _, v := range vs {
		m[v.Name] = v
	}
	return m
}

// keys is a tiny in-memory key store for the verifier.
type keys map[string]struct {
	account, secret string
}

func (k keys) lookup(sid string) (string, []byte, error) {
	e, ok := k[sid]
	if !ok {
		return "", nil, errors.New("no such key")
	}
	return e.account, []byte(e.secret), nil
}

var testKeys = keys{
	testKey:  {testAccount, testSecret},
	testKey2: {testAccount2, testSecret2},
}

func segments(t *testing.T, tok string) (header, payload string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return string(h), string(p)
}

// allGrantsToken is the access-all-grants vector's input.
func allGrantsToken() AccessToken {
	return AccessToken{
		AccountSid: testAccount,
		KeySid:     testKey,
		Identity:   "alice",
		Region:     "ie1",
		TTL:        600 * time.Second,
		Grants: Grants{
			Chat: &ChatGrant{
				ServiceSid:        "IS00000000000000000000000000000001",
				EndpointID:        "alice:device1",
				DeploymentRoleSid: "RL00000000000000000000000000000001",
				PushCredentialSid: "CR00000000000000000000000000000001",
			},
			Voice: &VoiceGrant{
				IncomingAllow:          true,
				OutgoingApplicationSid: "AP00000000000000000000000000000001",
				OutgoingParams:         map[string]any{"foo": "bar", "n": 1},
				PushCredentialSid:      "CR00000000000000000000000000000002",
				EndpointID:             "alice:ep",
			},
			Video:      &VideoGrant{Room: "room-1"},
			DataSync:   &SyncGrant{ServiceSid: "IS00000000000000000000000000000002", EndpointID: "alice:sync"},
			TaskRouter: &TaskRouterGrant{WorkspaceSid: "WS00000000000000000000000000000001", WorkerSid: "WK00000000000000000000000000000001", Role: "worker"},
			Player:     json.RawMessage(`{"requestCredentials":null,"playbackUrl":"https://example.invalid/p","playerStreamerSid":"VJ00000000000000000000000000000001"}`),
		},
	}
}

// TestAccessTokenMatchesTwilioNode mints the vectors' inputs and expects
// twilio-node's header and payload bytes, hence the same JWT.
func TestAccessTokenMatchesTwilioNode(t *testing.T) {
	vs := loadVectors(t)
	cases := map[string]AccessToken{
		"access-all-grants": allGrantsToken(),
		"access-defaults": {
			AccountSid: testAccount, KeySid: testKey, Identity: "42",
			NotBefore: time.Unix(1699999990, 0),
			Grants:    Grants{Video: &VideoGrant{}},
		},
	}
	for name, at := range cases {
		t.Run(name, func(t *testing.T) {
			v := vs[name]
			tok, err := at.Sign([]byte(v.Inputs.Secret), time.Unix(v.Inputs.Now, 0))
			if err != nil {
				t.Fatal(err)
			}
			h, p := segments(t, tok)
			if h != v.Header {
				t.Errorf("header\n got %s\nwant %s", h, v.Header)
			}
			if p != v.Payload {
				t.Errorf("payload\n got %s\nwant %s", p, v.Payload)
			}
			if tok != v.JWT {
				t.Errorf("jwt differs from twilio-node's")
			}
		})
	}
}

// TestVerifyVectors verifies every twilio-node token at its own clock.
func TestVerifyVectors(t *testing.T) {
	for name, v := range loadVectors(t) {
		t.Run(name, func(t *testing.T) {
			now := time.Unix(v.Inputs.Now, 0)
			switch v.Inputs.Kind {
			case "access":
				c, err := VerifyAccessToken(v.JWT, keys{v.Inputs.KeySid: {v.Inputs.AccountSid, v.Inputs.Secret}}.lookup, now)
				if err != nil {
					t.Fatal(err)
				}
				if c.AccountSid != v.Inputs.AccountSid || c.KeySid != v.Inputs.KeySid || !c.IssuedAt.Equal(now) ||
					!c.ExpiresAt.Equal(now.Add(time.Duration(v.Inputs.TTL)*time.Second)) {
					t.Errorf("claims %+v", c)
				}
			case "capability":
				c, err := VerifyCapabilityToken(v.JWT, func(sid string) ([]byte, error) {
					if sid != v.Inputs.AccountSid {
						return nil, errors.New("unknown account")
					}
					return []byte(v.Inputs.AuthToken), nil
				}, now)
				if err != nil {
					t.Fatal(err)
				}
				if c.AccountSid != v.Inputs.AccountSid || !c.IssuedAt.Equal(now) || len(c.Scopes) == 0 {
					t.Errorf("claims %+v", c)
				}
			default:
				t.Fatalf("kind %q", v.Inputs.Kind)
			}
		})
	}
}

// TestVerifyAllGrantsVector reads every grant of twilio-node's token back.
func TestVerifyAllGrantsVector(t *testing.T) {
	v := loadVectors(t)["access-all-grants"]
	c, err := VerifyAccessToken(v.JWT, testKeys.lookup, time.Unix(v.Inputs.Now, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := allGrantsToken()
	want.Grants.Voice.OutgoingParams = map[string]any{"foo": "bar", "n": float64(1)}
	if !reflect.DeepEqual(c.Grants, want.Grants) {
		t.Errorf("grants\n got %+v\nwant %+v", c.Grants, want.Grants)
	}
	if c.Identity != "alice" || c.Region != "ie1" || c.ID != testKey+"-1700000000" || !c.NotBefore.IsZero() {
		t.Errorf("claims %+v", c)
	}

	d := loadVectors(t)["access-defaults"]
	c, err = VerifyAccessToken(d.JWT, testKeys.lookup, time.Unix(d.Inputs.Now, 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity != "42" || c.Region != "" || !c.NotBefore.Equal(time.Unix(1699999990, 0)) ||
		c.Grants.Video == nil || *c.Grants.Video != (VideoGrant{}) || c.Grants.Voice != nil {
		t.Errorf("claims %+v", c)
	}
}

func TestAccessTokenRoundTripNTS(t *testing.T) {
	now := time.Unix(1700000000, 0)
	at := AccessToken{
		AccountSid: testAccount, KeySid: testKey, Identity: "bob & <carol>",
		TTL:    5 * time.Minute,
		Grants: Grants{NTS: &NTSGrant{TTL: 2 * time.Minute}, RTC: &RTCGrant{ConfigurationProfileSid: "CJ1"}},
	}
	tok, err := at.Sign([]byte(testSecret), now)
	if err != nil {
		t.Fatal(err)
	}
	_, p := segments(t, tok)
	if !strings.Contains(p, `"identity":"bob & <carol>"`) || !strings.Contains(p, `"nts":{"ttl":120}`) {
		t.Errorf("payload %s", p)
	}
	c, err := VerifyAccessToken(tok, testKeys.lookup, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.NTSTTL != 2*time.Minute || c.TURNTTL(time.Hour) != 2*time.Minute || c.TURNTTL(time.Minute) != time.Minute {
		t.Errorf("nts ttl %v", c.NTSTTL)
	}
	if c.Identity != at.Identity || c.Grants.RTC.ConfigurationProfileSid != "CJ1" {
		t.Errorf("claims %+v", c)
	}
	// An NTS grant without a cap.
	at.Grants.NTS = &NTSGrant{}
	tok, err = at.Sign([]byte(testSecret), now)
	if err != nil {
		t.Fatal(err)
	}
	if c, err = VerifyAccessToken(tok, testKeys.lookup, now); err != nil || c.NTSTTL != 0 || c.Grants.NTS == nil || c.TURNTTL(time.Hour) != time.Hour {
		t.Errorf("uncapped nts: %+v %v", c, err)
	}
}

func TestAccessTokenSignRefuses(t *testing.T) {
	now := time.Unix(1700000000, 0)
	base := AccessToken{AccountSid: testAccount, KeySid: testKey, Identity: "alice"}
	cases := []struct {
		name   string
		mod    func(*AccessToken)
		secret string
		code   int
	}{
		{"ttl over 24h", func(a *AccessToken) { a.TTL = 24*time.Hour + time.Second }, testSecret, CodeTokenTooLong},
		{"negative ttl", func(a *AccessToken) { a.TTL = -time.Second }, testSecret, CodeTokenExpired},
		{"bad key sid", func(a *AccessToken) { a.KeySid = "AK00000000000000000000000000000001" }, testSecret, CodeTokenIssuer},
		{"bad account sid", func(a *AccessToken) { a.AccountSid = "AC1" }, testSecret, CodeTokenIssuer},
		{"empty secret", func(*AccessToken) {}, "", CodeTokenAuth},
		{"voice identity with dash", func(a *AccessToken) { a.Identity = "al-ice"; a.Grants.Voice = &VoiceGrant{IncomingAllow: true} }, testSecret, CodeTokenGrants},
		{"voice without identity", func(a *AccessToken) { a.Identity = ""; a.Grants.Voice = &VoiceGrant{IncomingAllow: true} }, testSecret, CodeTokenGrants},
		{"player not object", func(a *AccessToken) { a.Grants.Player = json.RawMessage(`[1]`) }, testSecret, CodeTokenGrants},
		{"player not json", func(a *AccessToken) { a.Grants.Player = json.RawMessage(`{`) }, testSecret, CodeTokenGrants},
		{"nts ttl fraction", func(a *AccessToken) { a.Grants.NTS = &NTSGrant{TTL: time.Millisecond} }, testSecret, CodeTokenGrants},
		{"nbf after exp", func(a *AccessToken) { a.NotBefore = now.Add(2 * time.Hour) }, testSecret, CodeTokenNotYetValid},
		{"identity not UTF-8", func(a *AccessToken) { a.Identity = "\xff" }, testSecret, CodeTokenGrants},
		{"bad region", func(a *AccessToken) { a.Region = "IE 1" }, testSecret, CodeTokenHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := base
			tc.mod(&a)
			_, err := a.Sign([]byte(tc.secret), now)
			if CodeOf(err) != tc.code {
				t.Fatalf("got %v (code %d), want code %d", err, CodeOf(err), tc.code)
			}
		})
	}
	a := base
	a.TTL = 24 * time.Hour
	if _, err := a.Sign([]byte(testSecret), now); err != nil {
		t.Errorf("24h exactly: %v", err)
	}
}

// forge builds a token from raw header and payload JSON, signed by sign
// (nil: no signature).
func forge(header, payload string, sign func(string) []byte) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	if sign == nil {
		return in + "."
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sign(in))
}

func hmacWith(m *jwt.SigningMethodHMAC, secret string) func(string) []byte {
	return func(s string) []byte {
		sig, err := m.Sign(s, []byte(secret))
		if err != nil {
			panic(err)
		}
		return sig
	}
}

// TestVerifyAccessTokenAttacks refuses every forgery with its Twilio code.
func TestVerifyAccessTokenAttacks(t *testing.T) {
	now := time.Unix(1700000000, 0)
	const goodHeader = `{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`
	claims := func(iss, sub string, iat, exp int64) string {
		b, _ := json.Marshal(map[string]any{
			"jti": iss + "-1", "iss": iss, "sub": sub, "iat": iat, "exp": exp,
			"grants": map[string]any{"identity": "alice", "video": map[string]any{}},
		})
		return string(b)
	}
	good := claims(testKey, testAccount, now.Unix(), now.Unix()+600)
	hs256 := hmacWith(jwt.SigningMethodHS256, testSecret)
	valid := forge(goodHeader, good, hs256)
	if _, err := VerifyAccessToken(valid, testKeys.lookup, now); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(good, `"alice"`, `"admin"`, 1))) + "." + parts[2]

	cases := []struct {
		name   string
		token  string
		lookup KeyLookup
		code   int
	}{
		{"alg none", forge(`{"alg":"none","typ":"JWT","cty":"twilio-fpa;v=1"}`, good, nil), testKeys.lookup, CodeTokenHeaderFields},
		{"alg none signed", forge(`{"alg":"none","typ":"JWT","cty":"twilio-fpa;v=1"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"alg HS512", forge(`{"alg":"HS512","typ":"JWT","cty":"twilio-fpa;v=1"}`, good, hmacWith(jwt.SigningMethodHS512, testSecret)), testKeys.lookup, CodeTokenHeaderFields},
		{"alg RS256 with HMAC", forge(`{"alg":"RS256","typ":"JWT","cty":"twilio-fpa;v=1"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"duplicate alg, last none", forge(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1","alg":"none"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"no cty", forge(`{"alg":"HS256","typ":"JWT"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"wrong cty", forge(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=2"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"no typ", forge(`{"alg":"HS256","cty":"twilio-fpa;v=1"}`, good, hs256), testKeys.lookup, CodeTokenHeaderFields},
		{"header not json", forge(`{"alg":`, good, hs256), testKeys.lookup, CodeTokenHeader},
		{"header array", forge(`["HS256"]`, good, hs256), testKeys.lookup, CodeTokenHeader},
		{"twr not string", forge(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1","twr":1}`, good, hs256), testKeys.lookup, CodeTokenHeader},
		{"swapped iss/sub", forge(goodHeader, claims(testAccount, testKey, now.Unix(), now.Unix()+600), hs256), testKeys.lookup, CodeTokenIssuer},
		{"iss short", forge(goodHeader, claims("SK1", testAccount, now.Unix(), now.Unix()+600), hs256), testKeys.lookup, CodeTokenIssuer},
		{"key of another account", forge(goodHeader, claims(testKey2, testAccount, now.Unix(), now.Unix()+600), hmacWith(jwt.SigningMethodHS256, testSecret2)), testKeys.lookup, CodeTokenAuth},
		{"other account's key, signed with ours", forge(goodHeader, claims(testKey2, testAccount, now.Unix(), now.Unix()+600), hs256), testKeys.lookup, CodeTokenAuth},
		{"deleted key", valid, keys{}.lookup, CodeTokenAuth},
		{"suspended account", valid, func(string) (string, []byte, error) { return "", nil, errors.New("account suspended") }, CodeTokenAuth},
		{"expired", forge(goodHeader, claims(testKey, testAccount, now.Unix()-7200, now.Unix()-3600), hs256), testKeys.lookup, CodeTokenExpired},
		{"expired beyond skew", forge(goodHeader, claims(testKey, testAccount, now.Unix()-600, now.Unix()-31), hs256), testKeys.lookup, CodeTokenExpired},
		{"iat in the future", forge(goodHeader, claims(testKey, testAccount, now.Unix()+60, now.Unix()+600), hs256), testKeys.lookup, CodeTokenNotYetValid},
		{"nbf in the future", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","nbf":1700000100,"exp":1700000600,"grants":{}}`, hs256), testKeys.lookup, CodeTokenNotYetValid},
		{"exp 25h after iat", forge(goodHeader, claims(testKey, testAccount, now.Unix(), now.Unix()+25*3600), hs256), testKeys.lookup, CodeTokenTooLong},
		{"exp 25h after now, no iat nor nbf", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","exp":1700090000,"grants":{}}`, hs256), testKeys.lookup, CodeTokenTooLong},
		{"no exp", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"grants":{}}`, hs256), testKeys.lookup, CodeTokenExpired},
		{"exp a string", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","exp":"1700000600","grants":{}}`, hs256), testKeys.lookup, CodeTokenExpired},
		{"iat a string", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":"x","exp":1700000600,"grants":{}}`, hs256), testKeys.lookup, CodeTokenInvalid},
		{"tampered payload", tampered, testKeys.lookup, CodeTokenSignature},
		{"wrong secret", forge(goodHeader, good, hmacWith(jwt.SigningMethodHS256, "wrong")), testKeys.lookup, CodeTokenSignature},
		{"signature stripped", parts[0] + "." + parts[1] + ".", testKeys.lookup, CodeTokenSignature},
		{"truncated", valid[:len(valid)/2], testKeys.lookup, CodeTokenInvalid},
		{"truncated signature", valid[:len(valid)-3], testKeys.lookup, CodeTokenSignature},
		{"two segments", parts[0] + "." + parts[1], testKeys.lookup, CodeTokenInvalid},
		{"four segments", valid + ".x", testKeys.lookup, CodeTokenInvalid},
		{"empty", "", testKeys.lookup, CodeTokenInvalid},
		{"not base64", "eyJ!." + parts[1] + "." + parts[2], testKeys.lookup, CodeTokenInvalid},
		{"payload not json", forge(goodHeader, `{"iss":`, hs256), testKeys.lookup, CodeTokenInvalid},
		{"grants a string", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":"all"}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"no grants", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"identity a number", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"identity":42}}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"voice identity with space", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"identity":"a b","voice":{"incoming":{"allow":true}}}}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"video not object", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"video":"room"}}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"chat field wrong type", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"chat":{"service_sid":5}}}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"nts negative ttl", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"nts":{"ttl":-1}}}`, hs256), testKeys.lookup, CodeTokenGrants},
		{"nts fractional ttl", forge(goodHeader, `{"iss":"`+testKey+`","sub":"`+testAccount+`","iat":1700000000,"exp":1700000600,"grants":{"nts":{"ttl":1.5}}}`, hs256), testKeys.lookup, CodeTokenGrants},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := VerifyAccessToken(tc.token, tc.lookup, now)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code %d (%v), want %d", got, err, tc.code)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Message == "" {
				t.Fatalf("not a TokenError with a message: %v", err)
			}
		})
	}
}

// TestVerifyAccessTokenLenient accepts what the two libraries emit: no iat,
// no nbf, floats, keys in any order, escaped characters, small skew.
func TestVerifyAccessTokenLenient(t *testing.T) {
	now := time.Unix(1700000000, 0)
	hs256 := hmacWith(jwt.SigningMethodHS256, testSecret)
	cases := map[string]string{
		"twilio-go shape (sorted, nbf, float, escaped)": `{"exp":1700003600.0,"grants":{"identity":"a\u0026b","video":{}},"iss":"` + testKey + `","jti":"x","nbf":1700000000,"sub":"` + testAccount + `"}`,
		"no iat nor nbf":            `{"iss":"` + testKey + `","sub":"` + testAccount + `","exp":1700003600,"grants":{}}`,
		"iat within skew":           `{"iss":"` + testKey + `","sub":"` + testAccount + `","iat":1700000020,"exp":1700003600,"grants":{}}`,
		"expired within skew":       `{"iss":"` + testKey + `","sub":"` + testAccount + `","iat":1699990000,"exp":1699999990,"grants":{}}`,
		"exactly 24h":               `{"iss":"` + testKey + `","sub":"` + testAccount + `","iat":1700000000,"exp":1700086400,"grants":{}}`,
		"unknown grant kept out":    `{"iss":"` + testKey + `","sub":"` + testAccount + `","iat":1700000000,"exp":1700003600,"grants":{"future":[1,2]}}`,
		"ISS upper case is not iss": `{"ISS":"x","iss":"` + testKey + `","sub":"` + testAccount + `","iat":1700000000,"exp":1700003600,"grants":{}}`,
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			tok := forge(`{"typ":"JWT","cty":"twilio-fpa;v=1","alg":"HS256"}`, payload, hs256)
			c, err := VerifyAccessToken(tok, testKeys.lookup, now)
			if err != nil {
				t.Fatal(err)
			}
			if c.KeySid != testKey || c.AccountSid != testAccount {
				t.Errorf("claims %+v", c)
			}
		})
	}
	c, err := VerifyAccessToken(forge(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`, cases["twilio-go shape (sorted, nbf, float, escaped)"], hs256), testKeys.lookup, now)
	if err != nil || c.Identity != "a&b" || !c.IssuedAt.IsZero() || !c.NotBefore.Equal(now) || c.ID != "x" {
		t.Errorf("twilio-go shape: %+v %v", c, err)
	}
}

func TestTokenErrorIs(t *testing.T) {
	_, err := VerifyAccessToken("a.b", testKeys.lookup, time.Now())
	if !errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrTokenExpired) {
		t.Errorf("errors.Is: %v", err)
	}
	look := errors.New("gone")
	_, err = VerifyAccessToken(forge(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`, `{"iss":"`+testKey+`","sub":"`+testAccount+`","exp":1}`, nil),
		func(string) (string, []byte, error) { return "", nil, look }, time.Now())
	if !errors.Is(err, look) || !errors.Is(err, ErrTokenAuth) || CodeOf(err) != 20151 {
		t.Errorf("lookup error not kept: %v", err)
	}
	if CodeOf(nil) != 0 || CodeOf(errors.New("x")) != 0 {
		t.Error("CodeOf of a non-token error")
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Error("secret in message")
	}
}

func FuzzVerifyAccessToken(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(v.JWT)
	}
	now := time.Unix(1700000000, 0)
	tok, err := allGrantsToken().Sign([]byte(testSecret), now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(forge(`{"alg":"none"}`, `{}`, nil))
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := VerifyAccessToken(token, testKeys.lookup, now)
		if (c == nil) == (err == nil) {
			t.Fatalf("claims %v and error %v", c, err)
		}
		if err != nil && CodeOf(err) == 0 {
			t.Fatalf("untyped error %v", err)
		}
		cc, err := VerifyCapabilityToken(token, func(string) ([]byte, error) { return []byte("authtoken0000000000000000000000a"), nil }, now)
		if (cc == nil) == (err == nil) || (err != nil && CodeOf(err) == 0) {
			t.Fatalf("capability: claims %v and error %v", cc, err)
		}
	})
}

// FuzzVerifyAccessTokenSigned fuzzes header and payload JSON under a valid
// signature, so the claim and grant parsers behind the HMAC are reached.
func FuzzVerifyAccessTokenSigned(f *testing.F) {
	for _, v := range loadVectors(f) {
		if v.Inputs.Kind == "access" {
			f.Add(v.Header, v.Payload)
		}
	}
	f.Add(`{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`, `{"iss":"`+testKey+`","sub":"`+testAccount+`","exp":1700000600,"grants":{"nts":{"ttl":60},"voice":{"outgoing":{"params":{"a":[1]}}}}}`)
	now := time.Unix(1700000000, 0)
	sign := hmacWith(jwt.SigningMethodHS256, testSecret)
	f.Fuzz(func(t *testing.T, header, payload string) {
		c, err := VerifyAccessToken(forge(header, payload, sign), testKeys.lookup, now)
		if (c == nil) == (err == nil) || (err != nil && CodeOf(err) == 0) {
			t.Fatalf("claims %v and error %v", c, err)
		}
		if c != nil && (c.KeySid != testKey || c.AccountSid != testAccount || c.ExpiresAt.Sub(now) > MaxTokenLifetime+TokenClockSkew) {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func BenchmarkAccessTokenSign(b *testing.B) {
	b.ReportAllocs()
	at := allGrantsToken()
	now := time.Unix(1700000000, 0)
	secret := []byte(testSecret)
	for b.Loop() {
		if _, err := at.Sign(secret, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAccessTokenSignVideo(b *testing.B) {
	b.ReportAllocs()
	at := AccessToken{AccountSid: testAccount, KeySid: testKey, Identity: "alice", Grants: Grants{Video: &VideoGrant{Room: "r"}}}
	now := time.Unix(1700000000, 0)
	secret := []byte(testSecret)
	for b.Loop() {
		if _, err := at.Sign(secret, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyAccessToken(b *testing.B) {
	b.ReportAllocs()
	now := time.Unix(1700000000, 0)
	tok, err := allGrantsToken().Sign([]byte(testSecret), now)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := VerifyAccessToken(tok, testKeys.lookup, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyAccessTokenBadSignature(b *testing.B) {
	b.ReportAllocs()
	now := time.Unix(1700000000, 0)
	tok, err := allGrantsToken().Sign([]byte("not the secret"), now)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := VerifyAccessToken(tok, testKeys.lookup, now); CodeOf(err) != CodeTokenSignature {
			b.Fatal(err)
		}
	}
}
