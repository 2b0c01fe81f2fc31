package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/internal/pgtest"
)

// sharedStore is the YAML of two nodes on one PostgreSQL database.
func sharedStore(t *testing.T) (extra string, cluster *pgtest.Cluster) {
	cluster = pgtest.Start(t)
	dsn := cluster.NewDatabase(t)
	return fmt.Sprintf("store:\n  dsn: %q\n  encryption_key: %s\n", dsn, hex.EncodeToString(bytes.Repeat([]byte{0x5b}, 32))), cluster
}

// usageYAML is a usage section for a node.
func usageYAML(node, flush string) string {
	// The periodic re-read is a minute: only NOTIFY can explain a teardown
	// within 2 s.
	return fmt.Sprintf("usage:\n  node: %s\n  flush_interval: %s\n  revocation_poll: 1m\n", node, flush)
}

// pingPong relays n datagrams of size bytes to the echo peer and back,
// one at a time, so that every byte is known to have crossed the relay.
func pingPong(t *testing.T, rc net.PacketConn, peer net.Addr, n, size int) {
	t.Helper()
	out, in := bytes.Repeat([]byte{'u'}, size), make([]byte, size+100)
	for i := 0; i < n; i++ {
		if _, err := rc.WriteTo(out, peer); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if m, _, err := rc.ReadFrom(in); err != nil || m != size {
			t.Fatalf("echo %d: %d bytes, %v", i, m, err)
		}
	}
}

// twilioAt is twilio-go as an application uses it, sent to issuer.
func twilioAt(t *testing.T, issuer, user, pass, account string) *openapi.ApiService {
	t.Setenv("TWILIO_EDGE", "")
	t.Setenv("TWILIO_REGION", "")
	target, err := url.Parse(issuer)
	if err != nil {
		t.Fatal(err)
	}
	c := &client.Client{
		Credentials: client.NewCredentials(user, pass),
		HTTPClient:  &http.Client{Transport: toIssuer{target}, Timeout: 10 * time.Second},
	}
	c.SetAccountSid(account)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c, AccountSid: account}).Api
}

// toIssuer sends twilio-go's requests for api.twilio.com to traverse.
type toIssuer struct{ target *url.URL }

func (r toIssuer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = r.target.Scheme, r.target.Host, r.target.Host
	return HTTPClient().Transport.RoundTrip(req)
}

// turnUsage reads the account's turnmegabytes since yesterday with twilio-go.
func turnUsage(t *testing.T, api *openapi.ApiService) string {
	t.Helper()
	recs, err := api.ListUsageRecord(&openapi.ListUsageRecordParams{Category: ptrTo("turnmegabytes"), StartDate: ptrTo("-1days")})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Usage == nil {
		t.Fatalf("ListUsageRecord: %+v", recs)
	}
	return *recs[0].Usage
}

func ptrTo[T any](v T) *T { return &v }

// eventually retries f every 50 ms until it is true or d has passed, and
// returns how long it took.
func eventually(t *testing.T, d time.Duration, what string, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// cut runs act and checks that b tears an allocation down within 2 s
// of it returning (its kill counters, which count teardowns as they happen).
func cut(t *testing.T, b *Instance, what string, act func()) {
	t.Helper()
	killed := func() float64 {
		return b.Metric(`traverse_relay_allocations_killed_total{reason="revoked"}`) +
			b.Metric(`traverse_relay_allocations_killed_total{reason="kill"}`)
	}
	before := killed()
	act()
	took := eventually(t, 2*time.Second, what+": no teardown", func() bool { return killed() > before })
	t.Logf("%s: torn down after %s", what, took.Round(time.Millisecond))
}

// gone checks that pion's client finds its allocation gone: a
// CreatePermission on it is refused or unanswered (pion's server answers
// nothing for an allocation it no longer has, so this takes the client's
// retransmissions, several seconds).
func gone(t *testing.T, c *turn.Client, what string) {
	t.Helper()
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(127, 0, 1, 1), Port: 9}); err == nil {
		t.Fatalf("%s: pion's client still creates permissions on its allocation", what)
	}
}

// liveOn lists the account's allocations through issuer and returns the
// SID of the one with username on node, or "".
func liveOn(t *testing.T, issuer, account, authToken, node, username string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, issuer+"/v1/Accounts/"+account+"/Allocations.json", nil)
	req.SetBasicAuth(account, authToken)
	res, err := HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var l struct {
		Allocations []struct{ Sid, Node, Username string } `json:"allocations"`
	}
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 || json.Unmarshal(body, &l) != nil {
		t.Fatalf("allocations: %d %s", res.StatusCode, body)
	}
	for _, a := range l.Allocations {
		if a.Node == node && a.Username == username {
			return a.Sid
		}
	}
	return ""
}

// allocateWith mints a Tokens-resource credential at issuer and allocates
// with it on the UDP listener server.
func allocateWith(t *testing.T, issuer *Instance, server string) (Token, *turn.Client, net.PacketConn) {
	t.Helper()
	tok := issuer.CreateToken(600)
	c, rc, err := turnClient(t, "udp", server, tok.Username, tok.Password)
	if err != nil {
		t.Fatalf("allocate on %s: %v", server, err)
	}
	return tok, c, rc
}

// call makes a request authenticated as user:pass and returns the status.
func call(t *testing.T, method, u, user, pass string, form url.Values) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(form.Encode()))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

// TestUsageAndRevocationAcrossNodes: two `traverse serve` on one PostgreSQL.
// Usage relayed on both sums in one record that twilio-go reads; allocations
// on node B are listed through node A's API, and revoking the credential,
// deleting the API key, killing the allocation (HTTP and CLI) or suspending
// the parent account through node A tears B's allocation down within 2 s,
// as pion's client sees.
func TestUsageAndRevocationAcrossNodes(t *testing.T) {
	extra, _ := sharedStore(t)
	a := Start(t, Options{Extra: extra + usageYAML("node-a", "300ms"), CORSOrigins: []string{appOrigin}})
	b := Start(t, Options{Extra: extra + usageYAML("node-b", "300ms")})
	acct, token := a.AccountSid, a.AuthToken
	peer := FreeUDPPeer(t)
	api := twilioAt(t, a.Issuer, acct, token, acct)
	allocate := func(username, password string) *turn.Client {
		t.Helper()
		c, _, err := turnClient(t, "udp", b.UDP, username, password)
		if err != nil {
			t.Fatalf("allocate on node B: %v", err)
		}
		return c
	}

	// Usage from both nodes adds up in one record.
	tok := a.CreateToken(600)
	_, rcA, err := turnClient(t, "udp", a.UDP, tok.Username, tok.Password)
	if err != nil {
		t.Fatal(err)
	}
	cB, rcB, err := turnClient(t, "udp", b.UDP, tok.Username, tok.Password)
	if err != nil {
		t.Fatal(err)
	}
	pingPong(t, rcA, peer.LocalAddr(), 50, 1000)
	pingPong(t, rcB, peer.LocalAddr(), 25, 1000)
	// (50 + 25) datagrams of 1000 bytes, each way: 150000 bytes = 0.15 MB.
	eventually(t, 10*time.Second, "usage of both nodes in one record", func() bool { return turnUsage(t, api) == "0.15" })

	// Revoking the credential through A kills it on B, and B refuses it anew.
	eventually(t, 5*time.Second, "B's allocation listed at A", func() bool {
		return liveOn(t, a.Issuer, acct, token, "node-b", tok.Username) != ""
	})
	cut(t, b, "revoked credential", func() {
		if s, body := call(t, "POST", a.Issuer+"/v1/Accounts/"+acct+"/Credentials/"+url.PathEscape(tok.Username)+"/revoke", acct, token, nil); s != 204 {
			t.Fatalf("revoke: %d %s", s, body)
		}
	})
	gone(t, cB, "revoked credential")
	if _, _, err := turnClient(t, "udp", b.UDP, tok.Username, tok.Password); err == nil {
		t.Fatal("node B allocated with a revoked credential")
	}
	if n := b.Metric(`traverse_relay_allocations_killed_total{reason="revoked"}`); n < 1 {
		t.Errorf("node B counted %v revoked teardowns", n)
	}

	// Deleting the API key that signed an Access Token kills what
	// /v1/ice-servers minted from it.
	key := createKeyAt(t, a.Issuer, acct, token)
	jwt, err := auth.AccessToken{AccountSid: acct, KeySid: key.Sid, Identity: "alice", TTL: 10 * time.Minute}.Sign([]byte(key.Secret), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	status, body := postICEServers(t, a, jwt)
	var ice Token
	if status != http.StatusCreated || json.Unmarshal(body, &ice) != nil {
		t.Fatalf("ice-servers: %d %s", status, body)
	}
	allocate(ice.Username, ice.Password)
	cut(t, b, "deleted key", func() {
		if s, body := call(t, "DELETE", a.Issuer+"/2010-04-01/Accounts/"+acct+"/Keys/"+key.Sid+".json", acct, token, nil); s != 204 {
			t.Fatalf("delete key: %d %s", s, body)
		}
	})

	// Kill through A's API.
	tok3 := a.CreateToken(600)
	allocate(tok3.Username, tok3.Password)
	var sid string
	eventually(t, 5*time.Second, "allocation listed", func() bool {
		sid = liveOn(t, a.Issuer, acct, token, "node-b", tok3.Username)
		return sid != ""
	})
	cut(t, b, "killed through the API", func() {
		if s, body := call(t, "DELETE", a.Issuer+"/v1/Accounts/"+acct+"/Allocations/"+sid+".json", acct, token, nil); s != 204 {
			t.Fatalf("kill: %d %s", s, body)
		}
	})
	if s, _ := call(t, "DELETE", a.Issuer+"/v1/Accounts/"+acct+"/Allocations/RA00000000000000000000000000000000.json", acct, token, nil); s != 404 {
		t.Errorf("kill of an unknown allocation: %d, want 404", s)
	}

	// Kill with the CLI, run against node A's config.
	tok4 := a.CreateToken(600)
	allocate(tok4.Username, tok4.Password)
	eventually(t, 5*time.Second, "allocation listed", func() bool {
		sid = liveOn(t, a.Issuer, acct, token, "node-b", tok4.Username)
		return sid != ""
	})
	if out := a.CLI("sessions", "list", "--json"); !strings.Contains(string(out), sid) {
		t.Fatalf("sessions list does not show %s:\n%s", sid, out)
	}
	cut(t, b, "killed with the CLI", func() { a.CLI("sessions", "kill", sid) })

	// Suspending the parent account kills its subaccount's allocations.
	s, body := call(t, "POST", a.Issuer+"/2010-04-01/Accounts.json", acct, token, url.Values{"FriendlyName": {"sub"}})
	var sub struct {
		Sid       string `json:"sid"`
		AuthToken string `json:"auth_token"`
	}
	if s != 201 || json.Unmarshal(body, &sub) != nil {
		t.Fatalf("create subaccount: %d %s", s, body)
	}
	s, body = postTokens(t, a.Issuer, sub.Sid, sub.Sid, sub.AuthToken)
	var subTok Token
	if s != 201 || json.Unmarshal(body, &subTok) != nil {
		t.Fatalf("subaccount token: %d %s", s, body)
	}
	cS := allocate(subTok.Username, subTok.Password)
	cut(t, b, "parent account suspended", func() { a.CLI("accounts", "suspend", acct) })
	gone(t, cS, "parent account suspended")
}

// TestUsageFlushedOnSIGTERM: with a flush interval of an hour, bytes relayed
// on node B just before SIGTERM are in the store once B has exited.
func TestUsageFlushedOnSIGTERM(t *testing.T) {
	extra, _ := sharedStore(t)
	a := Start(t, Options{Extra: extra + usageYAML("node-a", "1h")})
	b := Start(t, Options{Extra: extra + usageYAML("node-b", "1h")})
	api := twilioAt(t, a.Issuer, a.AccountSid, a.AuthToken, a.AccountSid)
	tok, _, rc := allocateWith(t, a, b.UDP)
	// Listed means the flush the new allocation asked for is done.
	eventually(t, 5*time.Second, "allocation listed", func() bool {
		return liveOn(t, a.Issuer, a.AccountSid, a.AuthToken, "node-b", tok.Username) != ""
	})
	pingPong(t, rc, FreeUDPPeer(t).LocalAddr(), 40, 500)
	if got := turnUsage(t, api); got != "0" {
		t.Fatalf("usage before SIGTERM = %s, want 0 (nothing flushed within the hour)", got)
	}
	b.Stop()
	if got := turnUsage(t, api); got != "0.04" {
		t.Fatalf("usage after node B's SIGTERM = %s, want 0.04 (40 x 500 bytes each way)", got)
	}
}

// TestUsageSurvivesPostgresRestart: PostgreSQL stops in the middle of a
// call and comes back. The call goes on relaying throughout, the usage of
// the outage waits in memory (counted), and afterwards every byte is in the
// store: none lost, none counted twice.
func TestUsageSurvivesPostgresRestart(t *testing.T) {
	extra, cluster := sharedStore(t)
	a := Start(t, Options{Extra: extra + usageYAML("node-a", "300ms")})
	api := twilioAt(t, a.Issuer, a.AccountSid, a.AuthToken, a.AccountSid)
	_, _, rc := allocateWith(t, a, a.UDP)
	peer := FreeUDPPeer(t).LocalAddr()
	pingPong(t, rc, peer, 10, 1000)
	eventually(t, 10*time.Second, "usage before the outage", func() bool { return turnUsage(t, api) == "0.02" })

	if err := cluster.Down(); err != nil {
		t.Fatal(err)
	}
	pingPong(t, rc, peer, 20, 1000) // the call does not notice
	failed := a.Metric(`traverse_usage_flushes_total{result="error"}`)
	eventually(t, 10*time.Second, "a flush failing while PostgreSQL is down", func() bool {
		return a.Metric(`traverse_usage_flushes_total{result="error"}`) > failed && a.Metric("traverse_usage_buffered_rows") > 0
	})
	pingPong(t, rc, peer, 20, 1000)
	if err := cluster.Up(); err != nil {
		t.Fatal(err)
	}
	pingPong(t, rc, peer, 10, 1000)
	// 60 datagrams of 1000 bytes each way.
	eventually(t, 20*time.Second, "usage after the restart", func() bool { return turnUsage(t, api) == "0.12" })
	if d := a.Metric("traverse_usage_dropped_rows_total"); d != 0 {
		t.Errorf("%v usage rows dropped", d)
	}
}

// TestRevokeOnSQLite: on the default SQLite store the single node acts on a
// revocation at once, without waiting for its periodic re-read.
func TestRevokeOnSQLite(t *testing.T) {
	a := Start(t, Options{Extra: usageYAML("solo", "300ms")})
	tok, c, rc := allocateWith(t, a, a.UDP)
	pingPong(t, rc, FreeUDPPeer(t).LocalAddr(), 1, 100)
	cut(t, a, "revoked on SQLite", func() {
		if s, body := call(t, "POST", a.Issuer+"/v1/Accounts/"+a.AccountSid+"/Credentials/"+url.PathEscape(tok.Username)+"/revoke", a.AccountSid, a.AuthToken, nil); s != 204 {
			t.Fatalf("revoke: %d %s", s, body)
		}
	})
	gone(t, c, "revoked on SQLite")
}
