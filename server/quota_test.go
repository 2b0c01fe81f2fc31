package server

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/traverse/traverse/auth"
)

// TestAnonymousBrowsersQuota: credentials that /v1/ice-servers mints for an
// Access Token without identity are users of their own, so with
// relay.quota.per_user 1 two of them both allocate (a shared "anonymous"
// user got 486); relay.quota.per_account 2 then bounds the account: the
// third gets 486.
func TestAnonymousBrowsersQuota(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Relay.Quota.PerUser = 1
	cfg.Relay.Quota.PerAccount = 2
	cfg.Relay.Peers.AllowLoopback = true
	s := serveForTest(t, cfg)

	svc := s.issuer.svc
	acct, _, err := svc.EnsurePrimaryAccount(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.CreateKey(t.Context(), acct.Sid, "browser")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.AccessToken{AccountSid: acct.Sid, KeySid: key.Sid, TTL: time.Hour}.Sign([]byte(key.Secret), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server := s.Relay().Addrs().UDP[0]
	allocate := func() error {
		req, _ := http.NewRequest("POST", "http://"+s.issuer.ln.Addr().String()+"/v1/ice-servers", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var cred struct{ Username, Password string }
		if res.StatusCode != http.StatusCreated || json.NewDecoder(res.Body).Decode(&cred) != nil {
			t.Fatalf("ice-servers: %d", res.StatusCode)
		}
		if strings.Contains(cred.Username, "anonymous") {
			t.Fatalf("username %q names the shared anonymous user", cred.Username)
		}
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server.String(), TURNServerAddr: server.String(),
			Conn: pc, Username: cred.Username, Password: cred.Password, Realm: cfg.Realm, RTO: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); _ = pc.Close() })
		relayed, err := c.Allocate()
		if err == nil {
			t.Cleanup(func() { _ = relayed.Close() })
		}
		return err
	}
	for i := 0; i < 2; i++ {
		if err := allocate(); err != nil {
			t.Fatalf("anonymous browser %d: %v", i+1, err)
		}
	}
	if err := allocate(); err == nil || !strings.Contains(err.Error(), "486") {
		t.Fatalf("third allocation of the account: err = %v, want 486 (per_account)", err)
	}
}
