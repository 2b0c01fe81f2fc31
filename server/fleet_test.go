package server

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/internal/pgtest"
	"github.com/traverse/traverse/issuer"
)

// hosts counts the hosts of the first URI of n answers of s for a client.
func hosts(s *Server, n int) map[string]int {
	out := map[string]int{}
	for i := 0; i < n; i++ {
		uris := s.relayURIs(netip.MustParseAddr("198.51.100.1"))
		if len(uris) == 0 {
			out["(empty)"]++
			continue
		}
		_, rest, _ := strings.Cut(uris[0], ":")
		host, _, _ := strings.Cut(rest, ":")
		out[host]++
	}
	return out
}

// TestFleetSecretRingAndOutage: two nodes on one PostgreSQL. B mints with a
// secret A lacks: A's /readyz says so and B's issuer never lists A (A could
// not verify B's credentials), while A lists both. Then PostgreSQL stops:
// A keeps answering from its last fleet view, both nodes included, past
// three heartbeats, never with an empty list, and the view's age
// grows in traverse_fleet_view_age_seconds.
func TestFleetSecretRingAndOutage(t *testing.T) {
	cluster := pgtest.Start(t)
	dsn := cluster.NewDatabase(t)
	// Long enough that a loaded machine (and -race) never makes a live
	// node look down: down is three silent intervals.
	const hb = time.Second
	fleetConfig := func(ip string, secrets ...string) config.Config {
		c := loopbackConfig(t)
		c.Listen.UDP, c.Listen.TCP = []string{ip + ":0"}, []string{ip + ":0"}
		c.Relay.PublicIP, c.Relay.BindIP = ip, ip
		c.Store.DSN = dsn
		c.Store.EncryptionKey = hex.EncodeToString(bytes.Repeat([]byte{0x11}, 32))
		c.Auth.Secrets = secrets
		c.Node.Heartbeat = hb
		return c
	}
	const s1, s2 = "fleet-secret-one-0123456789", "fleet-secret-two-0123456789"
	a := startServer(t, fleetConfig("127.0.0.1", s1), nil)
	b := startServer(t, fleetConfig("127.0.0.3", s2, s1), nil)

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, "http://"+a.MetricsAddr().String()+"/readyz")
		if code == 503 && strings.Contains(body, "node "+b.NodeID()+" mints with a secret missing") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's /readyz never named B's missing secret: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := get(t, "http://"+b.MetricsAddr().String()+"/readyz"); code != 200 {
		t.Fatalf("B's /readyz: %d %s", code, body)
	}
	if got := hosts(b, 30); got["127.0.0.3"] != 30 {
		t.Fatalf("B's issuer listed a node that cannot verify its credentials: %v", got)
	}
	if got := hosts(a, 30); got["127.0.0.1"] == 0 || got["127.0.0.3"] == 0 {
		t.Fatalf("A's issuer before the outage: %v, want both nodes", got)
	}

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(4 * hb)
	seen := map[string]int{}
	for time.Now().Before(end) {
		for h, n := range hosts(a, 10) {
			seen[h] += n
		}
		time.Sleep(hb / 4)
	}
	if seen["(empty)"] != 0 || seen["127.0.0.1"] == 0 || seen["127.0.0.3"] == 0 {
		t.Fatalf("A's issuer with PostgreSQL stopped, over four heartbeats: %v, want both nodes and never empty", seen)
	}
	p := issuer.TokenPrincipal{Kind: issuer.TokenKindAccess, ExpiresAt: time.Now().Add(time.Hour)}
	p.Account.Sid = "AC00000000000000000000000000000001"
	tok, err := a.Issuer().CreateICEServers(p, time.Hour)
	if err != nil || len(tok.ICEServers) == 0 {
		t.Fatalf("a token minted with PostgreSQL down: %v, %d ice_servers", err, len(tok.ICEServers))
	}
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var age, errs float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "traverse_fleet_view_age_seconds":
			age = mf.GetMetric()[0].GetGauge().GetValue()
		case "traverse_fleet_view_errors_total":
			errs = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if age < (3*hb).Seconds() || errs == 0 {
		t.Fatalf("traverse_fleet_view_age_seconds = %v (want >= %v), traverse_fleet_view_errors_total = %v", age, (3 * hb).Seconds(), errs)
	}
	t.Logf("with PostgreSQL down: view age %.1fs, %v failed reads, answers %v", age, errs, seen)
}

// TestSingleNodeFleetURIs: on SQLite the one node is the fleet, and the
// URIs it lists are exactly those a node listed before fleets existed (the
// relay's advertised IP and bound ports), so the answer is byte-identical.
func TestSingleNodeFleetURIs(t *testing.T) {
	cfg := loopbackConfig(t)
	s := startServer(t, cfg, nil)
	want := s.iceURIs(cfg)
	for i := 0; i < 5; i++ {
		if got := s.relayURIs(netip.MustParseAddr("198.51.100.1")); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("fleet of one lists %q, want %q", got, want)
		}
	}
	if nodes := s.FleetNodes(); len(nodes) != 1 || nodes[0].ID != s.NodeID() || nodes[0].Status != "serving" {
		t.Fatalf("FleetNodes = %+v", nodes)
	}
}
