package auth

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	twjwt "github.com/twilio/twilio-go/client/jwt"
)

// twilio-go stamps its tokens with time.Now(), so these tests verify at
// time.Now() too.

// TestVerifyTwilioGoAccessToken: a token minted by twilio-go with every grant
// type it has is accepted and every grant is read back.
func TestVerifyTwilioGoAccessToken(t *testing.T) {
	params := map[string]any{"to": "+15550001111", "n": float64(2)}
	player := twjwt.PlaybackGrant{"requestCredentials": nil, "playbackUrl": "https://example.invalid/p?a=1&b=2", "playerStreamerSid": "VJ1"}
	at := twjwt.CreateAccessToken(twjwt.AccessTokenParams{
		AccountSid:    testAccount,
		SigningKeySid: testKey,
		Secret:        testSecret,
		Identity:      "alice_1",
		Region:        "ie1",
		Ttl:           3600,
	})
	at.AddGrant(&twjwt.ChatGrant{ServiceSid: "IS1", EndpointID: "alice:<dev>&1", DeploymentRoleSid: "RL1", PushCredentialSid: "CR1"})
	at.AddGrant(&twjwt.IpMessagingGrant{ServiceSid: "IS2", EndpointID: "alice:ipm", DeploymentRoleSid: "RL2", PushCredentialSid: "CR2"})
	at.AddGrant(&twjwt.VoiceGrant{
		Incoming:          twjwt.Incoming{Allow: true},
		Outgoing:          twjwt.Outgoing{ApplicationSid: "AP1", ApplicationParams: params},
		PushCredentialSid: "CR3",
		EndpointID:        "alice:voice",
	})
	at.AddGrant(&twjwt.VideoGrant{Room: "room-1"})
	at.AddGrant(&twjwt.SyncGrant{ServiceSid: "IS3", EndpointID: "alice:sync"})
	at.AddGrant(&twjwt.ConversationsGrant{ConfigurationProfileSid: "CJ1"})
	at.AddGrant(&player)
	at.AddGrant(&twjwt.TaskRouterGrant{WorkspaceSid: "WS1", WorkerSid: "WK1", Role: "worker"})
	tok, err := at.ToJwt()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := VerifyAccessToken(tok, testKeys.lookup, now)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccountSid != testAccount || c.KeySid != testKey || c.Identity != "alice_1" || c.Region != "ie1" {
		t.Errorf("claims %+v", c)
	}
	if !c.IssuedAt.IsZero() || c.NotBefore.IsZero() || c.ExpiresAt.Sub(c.NotBefore) != time.Hour {
		t.Errorf("times iat %v nbf %v exp %v", c.IssuedAt, c.NotBefore, c.ExpiresAt)
	}
	if !strings.HasPrefix(c.ID, testKey+"-") {
		t.Errorf("jti %q", c.ID)
	}
	want := Grants{
		Chat:        &ChatGrant{ServiceSid: "IS1", EndpointID: "alice:<dev>&1", DeploymentRoleSid: "RL1", PushCredentialSid: "CR1"},
		IPMessaging: &ChatGrant{ServiceSid: "IS2", EndpointID: "alice:ipm", DeploymentRoleSid: "RL2", PushCredentialSid: "CR2"},
		Voice: &VoiceGrant{IncomingAllow: true, OutgoingApplicationSid: "AP1", OutgoingParams: params,
			PushCredentialSid: "CR3", EndpointID: "alice:voice"},
		Video:      &VideoGrant{Room: "room-1"},
		DataSync:   &SyncGrant{ServiceSid: "IS3", EndpointID: "alice:sync"},
		RTC:        &RTCGrant{ConfigurationProfileSid: "CJ1"},
		TaskRouter: &TaskRouterGrant{WorkspaceSid: "WS1", WorkerSid: "WK1", Role: "worker"},
	}
	gotPlayer := c.Grants.Player
	c.Grants.Player = nil
	if !reflect.DeepEqual(c.Grants, want) {
		t.Errorf("grants\n got %+v\nwant %+v", c.Grants, want)
	}
	var p map[string]any
	if err := json.Unmarshal(gotPlayer, &p); err != nil || !reflect.DeepEqual(p, map[string]any(player)) {
		t.Errorf("player %s (%v)", gotPlayer, err)
	}

	// The same token from a key we do not hold, or with the wrong secret.
	if _, err := VerifyAccessToken(tok, keys{}.lookup, now); CodeOf(err) != CodeTokenAuth {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := VerifyAccessToken(tok, keys{testKey: {testAccount, "wrong"}}.lookup, now); CodeOf(err) != CodeTokenSignature {
		t.Errorf("wrong secret: %v", err)
	}
	// twilio-go's minimum TTL is an hour; two hours on it is expired.
	if _, err := VerifyAccessToken(tok, testKeys.lookup, now.Add(2*time.Hour)); CodeOf(err) != CodeTokenExpired {
		t.Errorf("later: %v", err)
	}
}

// TestVerifyTwilioGoNoIdentity: twilio-go omits an empty identity.
func TestVerifyTwilioGoNoIdentity(t *testing.T) {
	at := twjwt.CreateAccessToken(twjwt.AccessTokenParams{AccountSid: testAccount, SigningKeySid: testKey, Secret: testSecret})
	at.AddGrant(&twjwt.VideoGrant{})
	tok, err := at.ToJwt()
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyAccessToken(tok, testKeys.lookup, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity != "" || c.Region != "" || c.Grants.Video == nil {
		t.Errorf("claims %+v", c)
	}
}

// TestTwilioGoReadsOurToken: twilio-go's FromJwt verifies and decodes the
// tokens we mint.
func TestTwilioGoReadsOurToken(t *testing.T) {
	at := allGrantsToken()
	at.Grants.IPMessaging = &ChatGrant{ServiceSid: "IS9"}
	at.Grants.RTC = &RTCGrant{ConfigurationProfileSid: "CJ1"}
	at.Grants.NTS = &NTSGrant{TTL: time.Minute}
	tok, err := at.Sign([]byte(testSecret), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var empty twjwt.AccessToken
	got, err := empty.FromJwt(tok, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccountSid != testAccount || got.SigningKeySid != testKey || got.Identity != "alice" || got.Region != "ie1" {
		t.Errorf("twilio-go read %+v", got)
	}
	byKey := map[string]twjwt.BaseGrant{}
	for _, g := range got.Grants {
		byKey[g.Key()] = g
	}
	for _, k := range []string{"chat", "ip_messaging", "voice", "video", "data_sync", "rtc", "task_router", "player"} {
		if byKey[k] == nil {
			t.Errorf("twilio-go did not read grant %q", k)
		}
	}
	if v, ok := byKey["voice"].(*twjwt.VoiceGrant); !ok || !v.Incoming.Allow || v.Outgoing.ApplicationSid != "AP00000000000000000000000000000001" ||
		v.Outgoing.ApplicationParams["foo"] != "bar" || v.EndpointID != "alice:ep" {
		t.Errorf("voice %+v", byKey["voice"])
	}
	if c, ok := byKey["chat"].(*twjwt.ChatGrant); !ok || *c != (twjwt.ChatGrant{ServiceSid: "IS00000000000000000000000000000001", EndpointID: "alice:device1",
		DeploymentRoleSid: "RL00000000000000000000000000000001", PushCredentialSid: "CR00000000000000000000000000000001"}) {
		t.Errorf("chat %+v", byKey["chat"])
	}
	if tr, ok := byKey["task_router"].(*twjwt.TaskRouterGrant); !ok || tr.Role != "worker" {
		t.Errorf("task_router %+v", byKey["task_router"])
	}
	if p, ok := byKey["player"].(*twjwt.PlaybackGrant); !ok || (*p)["playbackUrl"] != "https://example.invalid/p" {
		t.Errorf("player %+v", byKey["player"])
	}
	if h := got.Headers(); h["cty"] != "twilio-fpa;v=1" || h["typ"] != "JWT" || h["alg"] != "HS256" {
		t.Errorf("headers %v", h)
	}
	if _, err := empty.FromJwt(tok, "wrong"); err == nil {
		t.Error("twilio-go accepted our token with the wrong secret")
	}
}
