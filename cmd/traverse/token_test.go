package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/auth"
)

const (
	tokAccount = "AC00000000000000000000000000000001"
	tokKey     = "SK00000000000000000000000000000001"
	tokSecret  = "apisecret000000000000000000000001"
	tokAuth    = "authtoken0000000000000000000000a"
)

func runToken(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newTokenCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func TestTokenAccessCmd(t *testing.T) {
	t.Setenv(envKeySecret, tokSecret)
	out, err := runToken(t, "access", "--account", tokAccount, "--key", tokKey, "--identity", "alice",
		"--voice-app", "AP1", "--voice-incoming", "--video-room", "R", "--chat-service", "IS1",
		"--nts-ttl", "1h", "--region", "ie1", "--ttl", "10m")
	if err != nil {
		t.Fatal(err, out)
	}
	c, err := auth.VerifyAccessToken(strings.TrimSpace(out), func(string) (string, []byte, error) {
		return tokAccount, []byte(tokSecret), nil
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	g := c.Grants
	if c.Identity != "alice" || c.Region != "ie1" || c.NTSTTL != time.Hour || c.ExpiresAt.Sub(c.IssuedAt) != 10*time.Minute ||
		g.Voice == nil || !g.Voice.IncomingAllow || g.Voice.OutgoingApplicationSid != "AP1" ||
		g.Video == nil || g.Video.Room != "R" || g.Chat == nil || g.Chat.ServiceSid != "IS1" {
		t.Errorf("claims %+v", c)
	}

	out, err = runToken(t, "access", "--account", tokAccount, "--key", tokKey, "--secret", tokSecret, "--identity", "bob", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Token  string
		Header map[string]any
		Claims map[string]any
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.Header["cty"] != "twilio-fpa;v=1" || j.Claims["sub"] != tokAccount || j.Token == "" {
		t.Errorf("json %s (%v)", out, err)
	}

	if _, err := runToken(t, "access", "--account", tokAccount, "--key", tokKey, "--ttl", "25h"); auth.CodeOf(err) != auth.CodeTokenTooLong {
		t.Errorf("25h: %v", err)
	}
	t.Setenv(envKeySecret, "")
	if _, err := runToken(t, "access", "--account", tokAccount, "--key", tokKey); err == nil {
		t.Error("minted without a secret")
	}
}

func TestTokenCapabilityCmd(t *testing.T) {
	t.Setenv(envAuthToken, tokAuth)
	out, err := runToken(t, "capability", "--account", tokAccount, "--incoming", "alice", "--outgoing", "AP1",
		"--client-name", "alice", "--param", "b=2", "--param", "a=x y", "--ttl", "5m")
	if err != nil {
		t.Fatal(err, out)
	}
	c, err := auth.VerifyCapabilityToken(strings.TrimSpace(out), func(string) ([]byte, error) { return []byte(tokAuth), nil }, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	in, _ := c.Incoming()
	o, _ := c.Outgoing()
	if in.ClientName != "alice" || o.ApplicationSid != "AP1" || o.ClientName != "alice" ||
		len(o.Params) != 2 || o.Params[0] != (auth.Param{Name: "b", Value: "2"}) || o.Params[1] != (auth.Param{Name: "a", Value: "x y"}) {
		t.Errorf("scopes %#v", c.Scopes)
	}
	if _, err := runToken(t, "capability", "--account", tokAccount); err == nil {
		t.Error("minted without a scope")
	}
	if _, err := runToken(t, "capability", "--account", tokAccount, "--incoming", "alice smith"); auth.CodeOf(err) != auth.CodeTokenGrants {
		t.Errorf("client name with a space: %v", err)
	}
}

func TestTokenVerifyCmd(t *testing.T) {
	t.Setenv(envKeySecret, "")
	t.Setenv(envAuthToken, "")
	now := time.Unix(1700000000, 0)
	tok, err := auth.AccessToken{AccountSid: tokAccount, KeySid: tokKey, Identity: "alice", TTL: 10 * time.Minute,
		Grants: auth.Grants{Video: &auth.VideoGrant{}}}.Sign([]byte(tokSecret), now)
	if err != nil {
		t.Fatal(err)
	}
	verdict := func(out string) tokenVerdict {
		t.Helper()
		var v tokenVerdict
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return v
	}

	out, err := runToken(t, "verify", tok, "--secret", tokSecret, "--now", "1700000000")
	v := verdict(out)
	if err != nil || v.Kind != "access" || !v.SignatureChecked || v.Valid == nil || !*v.Valid || v.Code != 0 || claimedAccount(v.Claims) != tokAccount {
		t.Errorf("valid token: %v %s", err, out)
	}

	out, err = runToken(t, "verify", tok, "--secret", tokSecret, "--now", "1700003600")
	v = verdict(out)
	if err == nil || v.Valid == nil || *v.Valid || v.Code != auth.CodeTokenExpired {
		t.Errorf("expired: %v %s", err, out)
	}

	out, err = runToken(t, "verify", tok, "--secret", "wrong", "--now", "1700000000")
	if v = verdict(out); err == nil || v.Code != auth.CodeTokenSignature {
		t.Errorf("wrong secret: %v %s", err, out)
	}

	out, err = runToken(t, "verify", tok)
	if v = verdict(out); err != nil || v.SignatureChecked || v.Valid != nil || len(v.Header) == 0 {
		t.Errorf("no secret: %v %s", err, out)
	}

	capTok, err := auth.CapabilityToken{AccountSid: tokAccount, Scopes: []auth.Scope{auth.IncomingClientScope{ClientName: "alice"}}}.Sign([]byte(tokAuth), now)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envAuthToken, tokAuth)
	out, err = runToken(t, "verify", capTok, "--now", "1700000000")
	if v = verdict(out); err != nil || v.Kind != "capability" || v.Valid == nil || !*v.Valid {
		t.Errorf("capability: %v %s", err, out)
	}

	out, err = runToken(t, "verify", "not.a.token", "--secret", "x")
	if v = verdict(out); err == nil || v.Code != auth.CodeTokenHeader {
		t.Errorf("garbage: %v %s", err, out)
	}
}
