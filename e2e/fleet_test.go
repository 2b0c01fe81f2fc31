package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/traverse/traverse/internal/pgtest"
)

// fleetHeartbeat is node.heartbeat in the fleet tests: short, so a dead
// node leaves quickly, yet long enough that on a loaded 2-core machine a
// live node never misses three beats in a row.
const fleetHeartbeat = time.Second

// TestFleet runs three `traverse serve` processes on one PostgreSQL, each
// relay on its own loopback address standing in for a public IP:
//
//	A 127.0.0.2 region ""       weight 1
//	B 127.0.0.3 region eu-west  weight 3
//	C 127.0.0.4 region us-east  weight 2 (its issuer maps 127.0.0.0/8 to
//	  us-east and 198.51.100.0/24 to eu-west, and trusts 127.0.0.1 as a proxy)
//
// and checks: tokens from A spread over the three nodes in proportion to
// weight; C's issuer picks by region_by_cidr, from X-Forwarded-For only as a
// trusted proxy says it; a drained node is never handed out once `traverse
// nodes drain` returns, and comes back after undrain; a credential minted
// by issuer A allocates on node C; SIGTERM marks C draining at once while
// its allocation keeps relaying; a SIGKILLed node leaves the answers within
// three heartbeats.
func TestFleet(t *testing.T) {
	cluster := pgtest.Start(t)
	dsn := cluster.NewDatabase(t)
	shared := fmt.Sprintf("store:\n  dsn: %q\n  encryption_key: %s\n", dsn, hex.EncodeToString(bytes.Repeat([]byte{0x5b}, 32)))
	node := func(region string, weight int) string {
		return shared + fmt.Sprintf("node:\n  region: %q\n  weight: %d\n  heartbeat: %s\n", region, weight, fleetHeartbeat)
	}
	a := Start(t, Options{IP: "127.0.0.2", Fleet: true, Extra: node("", 1)})
	b := Start(t, Options{IP: "127.0.0.3", Fleet: true, Extra: node("eu-west", 3)})
	c := Start(t, Options{IP: "127.0.0.4", Fleet: true, Extra: node("us-east", 2), Drain: 20 * time.Second,
		Issuer: "  trusted_proxies: [127.0.0.1/32]\n  region_by_cidr:\n    127.0.0.0/8: us-east\n    198.51.100.0/24: eu-west\n"})
	hostOf := map[string]string{"127.0.0.2": "A", "127.0.0.3": "B", "127.0.0.4": "C"}
	ids := map[string]string{"A": nodeID(t, a), "B": nodeID(t, b), "C": nodeID(t, c)}

	// Every node sees every other: node lists agree.
	waitFor(t, 10*time.Second, "three serving nodes in `nodes list`", func() bool {
		return strings.Count(string(a.CLI("nodes", "list", "--json")), `"status": "serving"`) == 3
	})

	// choose asks issuer in for n tokens and counts the node of each.
	choose := func(in *Instance, n int, xff string) map[string]int {
		t.Helper()
		got := map[string]int{}
		for i := 0; i < n; i++ {
			tok := fleetToken(t, in, xff)
			got[nodeOfToken(t, tok, hostOf)]++
		}
		return got
	}

	// Weight: 600 tokens from A land 100/300/200 on A/B/C, each within ±40.
	spread := choose(a, 600, "")
	t.Logf("600 tokens from issuer A: %v (weights A=1 B=3 C=2)", spread)
	for n, want := range map[string]int{"A": 100, "B": 300, "C": 200} {
		if d := spread[n] - want; d < -40 || d > 40 {
			t.Errorf("node %s chosen %d times of 600, want %d ± 40: %v", n, spread[n], want, spread)
		}
	}
	if got := a.Metric(`traverse_fleet_nodes{state="serving"}`); got != 3 {
		t.Errorf(`issuer A: traverse_fleet_nodes{state="serving"} = %v, want 3`, got)
	}
	if got := a.Metric(fmt.Sprintf(`traverse_fleet_chosen_total{node=%q}`, ids["B"])); got != float64(spread["B"]) {
		t.Errorf("issuer A: chosen_total for B = %v, want %d", got, spread["B"])
	}

	// Region: C's issuer maps the loopback client to us-east (C only); a
	// client named by its trusted proxy in 198.51.100.0/24 gets eu-west (B).
	if got := choose(c, 20, ""); got["C"] != 20 {
		t.Errorf("issuer C, client 127.0.0.1 (us-east): %v, want only C", got)
	}
	if got := choose(c, 20, "198.51.100.7"); got["B"] != 20 {
		t.Errorf("issuer C, client 198.51.100.7 via trusted proxy (eu-west): %v, want only B", got)
	}
	// A header from an untrusted peer counts for nothing: issuer A trusts no
	// proxy, so the same header leaves A's choice region-free.
	if got := choose(a, 60, "198.51.100.7"); got["A"] == 0 || got["C"] == 0 {
		t.Errorf("issuer A with a spoofed X-Forwarded-For: %v, want all regions", got)
	}

	// Drain B from A's CLI: from the moment the command returns, no issuer lists B.
	a.CLI("nodes", "drain", ids["B"])
	if got := choose(a, 60, ""); got["B"] != 0 {
		t.Errorf("issuer A right after `nodes drain B`: %v", got)
	}
	if got := choose(c, 20, "198.51.100.7"); got["B"] != 0 || got["A"]+got["C"] != 20 {
		t.Errorf("issuer C (eu-west client) right after `nodes drain B`: %v, want a fallback to other regions", got)
	}
	waitFor(t, 5*time.Second, "/readyz of B to say draining", func() bool {
		st, body := httpGet(t, b.Metrics+"/readyz")
		return st == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	if out := string(a.CLI("nodes", "list")); !strings.Contains(out, ids["B"]) || !strings.Contains(out, "draining") {
		t.Errorf("nodes list after drain:\n%s", out)
	}
	a.CLI("nodes", "undrain", ids["B"])
	if got := choose(a, 60, ""); got["B"] == 0 {
		t.Errorf("issuer A after `nodes undrain B`: %v, want B back", got)
	}

	// A credential from issuer A that lists C allocates on C.
	var onC Token
	for i := 0; i < 200 && onC.Username == ""; i++ {
		if tok := fleetToken(t, a, ""); nodeOfToken(t, tok, hostOf) == "C" {
			onC = tok
		}
	}
	if onC.Username == "" {
		t.Fatal("issuer A never listed C in 200 tokens")
	}
	transport, addr := parseTURNURI(t, onC.ICEServers[1].URLs)
	if transport != "udp" || !strings.HasPrefix(addr, "127.0.0.4:") {
		t.Fatalf("second entry of a C token: %s", onC.ICEServers[1].URLs)
	}
	peer := FreeUDPPeer(t)
	_, rc, err := turnClient(t, "udp", addr, onC.ICEServers[1].Username, onC.ICEServers[1].Credential)
	if err != nil {
		t.Fatalf("allocate on C with issuer A's credential: %v", err)
	}
	echo := func(msg string) {
		t.Helper()
		if _, err := rc.WriteTo([]byte(msg), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := rc.ReadFrom(buf); err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %q through C: %q %v", msg, buf[:n], err)
		}
	}
	echo("issued by A, relayed by C")

	// SIGTERM C: it is draining in the store at once (before its drain
	// timeout ends), no issuer lists it, and its allocation keeps relaying.
	c.signal(syscall.SIGTERM)
	waitFor(t, 5*time.Second, "C draining in `nodes list`", func() bool {
		return nodeStatus(t, a, ids["C"]) == "draining"
	})
	if got := choose(a, 60, ""); got["C"] != 0 {
		t.Errorf("issuer A after SIGTERM to C: %v", got)
	}
	echo("still relaying while C drains")

	// SIGKILL B: within three heartbeats (plus scheduling slack) no answer lists it.
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 3*fleetHeartbeat+2*time.Second, "B to leave issuer A's answers", func() bool {
		got := choose(a, 10, "")
		return got["B"] == 0
	})
	gone := time.Now()
	last := nodeLastHeartbeat(t, a, ids["B"])
	t.Logf("SIGKILLed node left the answers %s after the kill, %s after its last heartbeat (heartbeat %s)",
		gone.Sub(killed).Round(10*time.Millisecond), gone.Sub(last).Round(10*time.Millisecond), fleetHeartbeat)
	if d := gone.Sub(last); d > 3*fleetHeartbeat+time.Second {
		t.Errorf("B left the answers %s after its last heartbeat, want within three heartbeats (+1s polling slack)", d)
	}
	if got := choose(a, 30, ""); got["A"] != 30 {
		t.Errorf("issuer A with B killed and C draining: %v, want only A", got)
	}
	waitFor(t, 5*time.Second, "B down in `nodes list`", func() bool { return nodeStatus(t, a, ids["B"]) == "down" })
	if logs := a.Logs() + b.Logs() + c.Logs(); strings.Contains(logs, Secret) || strings.Contains(logs, cluster.Password) {
		t.Error("a node logged a secret")
	}
}

// fleetToken mints a token at in, with X-Forwarded-For: xff when set.
func fleetToken(t *testing.T, in *Instance, xff string) Token {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.Issuer+"/2010-04-01/Accounts/"+in.AccountSid+"/Tokens.json", nil)
	req.SetBasicAuth(in.AccountSid, in.AuthToken)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	res, err := HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var tok Token
	if res.StatusCode != http.StatusCreated || json.Unmarshal(body, &tok) != nil {
		t.Fatalf("Tokens at %s: %d %s", in.Issuer, res.StatusCode, body)
	}
	return tok
}

// nodeOfToken names the one node a token lists, checking that all its
// entries use that node's host (Twilio's shape: stun, then turn entries).
func nodeOfToken(t *testing.T, tok Token, hostOf map[string]string) string {
	t.Helper()
	if len(tok.ICEServers) < 2 || !strings.HasPrefix(tok.ICEServers[0].URLs, "stun:") {
		t.Fatalf("ice_servers: %+v", tok.ICEServers)
	}
	node := ""
	for _, e := range tok.ICEServers {
		_, rest, _ := strings.Cut(e.URLs, ":")
		host, _, _ := strings.Cut(rest, ":")
		n, ok := hostOf[host]
		if !ok || (node != "" && n != node) {
			t.Fatalf("ice_servers mix hosts or name an unknown one: %+v", tok.ICEServers)
		}
		node = n
	}
	return node
}

func nodeID(t *testing.T, in *Instance) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(in.Dir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// nodeStatus is the status `traverse nodes list --json` gives node id.
func nodeStatus(t *testing.T, in *Instance, id string) string {
	t.Helper()
	var nodes []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(in.CLI("nodes", "list", "--json"), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n.Status
		}
	}
	return ""
}

// nodeLastHeartbeat is node id's last heartbeat per `traverse nodes list --json`.
func nodeLastHeartbeat(t *testing.T, in *Instance, id string) time.Time {
	t.Helper()
	var nodes []struct {
		ID            string    `json:"id"`
		LastHeartbeat time.Time `json:"last_heartbeat"`
	}
	if err := json.Unmarshal(in.CLI("nodes", "list", "--json"), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n.LastHeartbeat
		}
	}
	t.Fatalf("node %s not listed", id)
	return time.Time{}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestFleetPostgresDown: two nodes on one PostgreSQL, then PostgreSQL stops.
// Issuer A (issuer.outage_grace: 1m, so the account it has just read still
// authenticates) keeps answering the Tokens resource for four heartbeats (a
// node is down after three), from its last fleet view: both nodes still listed, never an empty
// ice_servers; traverse_fleet_view_age_seconds says how stale that view is.
func TestFleetPostgresDown(t *testing.T) {
	cluster := pgtest.Start(t)
	dsn := cluster.NewDatabase(t)
	extra := fmt.Sprintf("store:\n  dsn: %q\n  encryption_key: %s\nnode:\n  heartbeat: %s\n",
		dsn, hex.EncodeToString(bytes.Repeat([]byte{0x5c}, 32)), fleetHeartbeat)
	a := Start(t, Options{IP: "127.0.0.2", Fleet: true, Extra: extra, Issuer: "  outage_grace: 1m\n"})
	Start(t, Options{IP: "127.0.0.3", Fleet: true, Extra: extra})
	hostOf := map[string]string{"127.0.0.2": "A", "127.0.0.3": "B"}
	waitFor(t, 10*time.Second, "two serving nodes", func() bool {
		return strings.Count(string(a.CLI("nodes", "list", "--json")), `"status": "serving"`) == 2
	})
	fleetToken(t, a, "") // A reads its account while the database is up

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	got := map[string]int{}
	for time.Since(stopped) < 4*fleetHeartbeat {
		got[nodeOfToken(t, fleetToken(t, a, ""), hostOf)]++ // fails on an empty ice_servers
	}
	if got["A"] == 0 || got["B"] == 0 {
		t.Fatalf("issuer A with PostgreSQL stopped for four heartbeats: %v, want both nodes from its last view", got)
	}
	age := a.Metric("traverse_fleet_view_age_seconds")
	if age < (3 * fleetHeartbeat).Seconds() {
		t.Fatalf("traverse_fleet_view_age_seconds = %v, want >= %v", age, (3 * fleetHeartbeat).Seconds())
	}
	if n := a.Metric("traverse_issuer_outage_auth_total"); n < 1 {
		t.Fatalf("traverse_issuer_outage_auth_total = %v", n)
	}
	t.Logf("PostgreSQL down %s: issuer A answered %v; view age %.1fs", time.Since(stopped).Round(100*time.Millisecond), got, age)
}
