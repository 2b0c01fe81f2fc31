package fleet_test

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/traverse/traverse/fleet"
	"github.com/traverse/traverse/store"
	"github.com/traverse/traverse/store/sqlite"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const hb = 5 * time.Second

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.OpenFile(context.Background(), filepath.Join(t.TempDir(), "t.db"), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func node(id, region string, weight int, now time.Time) store.Node {
	return store.Node{ID: id, PublicHost: id + ".example", URIs: []string{"turn:" + id + ".example:3478?transport=udp"},
		Region: region, Weight: weight, State: store.NodeServing, Started: now, LastHeartbeat: now,
		SecretFingerprints: []string{"mint"}}
}

func newView(t *testing.T, st store.NodeStore, c *clock, o fleet.ViewOptions) (*fleet.View, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Store, o.Heartbeat, o.Now, o.Registerer = st, hb, c.Now, reg
	v, err := fleet.NewView(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v, reg
}

func ids(nodes []store.Node) string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.ID)
	}
	return strings.Join(out, ",")
}

// TestChooseSpreadsByWeight: with no allocations, 600 choices over weights
// 1, 2 and 3 land 100, 200 and 300 times, within 5%: the credentials an
// issuer hands out count as load until allocations show.
func TestChooseSpreadsByWeight(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	for i, id := range []string{"a", "b", "c"} {
		if err := st.SaveNode(ctx, node(id, "", i+1, c.Now())); err != nil {
			t.Fatal(err)
		}
	}
	v, reg := newView(t, st, c, fleet.ViewOptions{})
	got := map[string]int{}
	for i := 0; i < 600; i++ {
		if i%50 == 0 { // a re-read every 50 tokens halves the pending load
			if err := v.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}
		ch := v.Choose(netip.MustParseAddr("198.51.100.1"))
		if len(ch) != 1 {
			t.Fatalf("Choose returned %d nodes", len(ch))
		}
		got[ch[0].ID]++
	}
	for id, want := range map[string]int{"a": 100, "b": 200, "c": 300} {
		if d := got[id] - want; d < -30 || d > 30 {
			t.Errorf("node %s chosen %d times, want %d ± 30 (%v)", id, got[id], want, got)
		}
	}
	if n := value(t, reg, "traverse_fleet_chosen_total", "node", "c"); n != float64(got["c"]) {
		t.Errorf("traverse_fleet_chosen_total{node=c} = %v, want %d", n, got["c"])
	}
}

// TestChooseLeastLoaded: allocations over weight decide; PerToken caps the answer.
func TestChooseLeastLoaded(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	a, b, d := node("a", "", 1, c.Now()), node("b", "", 4, c.Now()), node("d", "", 1, c.Now())
	a.Allocations, b.Allocations, d.Allocations = 10, 8, 1 // 10, 2, 1 per weight
	for _, n := range []store.Node{a, b, d} {
		must(t, st.SaveNode(ctx, n))
	}
	v, _ := newView(t, st, c, fleet.ViewOptions{PerToken: 2})
	if got := ids(v.Choose(netip.Addr{})); got != "d,b" {
		t.Fatalf("Choose = %s, want d,b", got)
	}
}

// TestChooseRegion: the client's region from region_by_cidr (longest prefix
// first), else the issuer's own region, else any.
func TestChooseRegion(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	for _, n := range []store.Node{node("eu1", "eu-west", 1, c.Now()), node("us1", "us-east", 1, c.Now()), node("ap1", "ap-south", 1, c.Now())} {
		must(t, st.SaveNode(ctx, n))
	}
	regions := fleet.NewRegions([]fleet.RegionPrefix{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Region: "us-east"},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Region: "ap-south"},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Region: "mars"},
	})
	v, _ := newView(t, st, c, fleet.ViewOptions{Regions: regions, OwnRegion: "eu-west"})
	for client, want := range map[string]string{
		"10.2.3.4":        "us1",
		"10.1.3.4":        "ap1", // the longer prefix wins
		"::ffff:10.1.3.4": "ap1",
		"198.51.100.7":    "eu1", // no match: the issuer's own region
		"192.0.2.9":       "eu1", // a region without nodes: own region
		"2001:db8::1":     "eu1",
	} {
		for i := 0; i < 5; i++ {
			if got := ids(v.Choose(netip.MustParseAddr(client))); got != want {
				t.Fatalf("client %s: chose %s, want %s", client, got, want)
			}
		}
	}
}

// TestDrainAndDown: a drain is honoured by the very next Choose (the fleet
// version moved); a node silent for three heartbeats is down; a node that
// cannot verify this issuer's minting secret is skipped.
func TestDrainAndDown(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	stale := node("stale", "", 1000, c.Now())
	foreign := node("foreign", "", 1000, c.Now())
	foreign.SecretFingerprints = []string{"other"}
	for _, n := range []store.Node{node("a", "", 1, c.Now()), node("b", "", 1000, c.Now()), stale, foreign} {
		must(t, st.SaveNode(ctx, n))
	}
	v, reg := newView(t, st, c, fleet.ViewOptions{PerToken: 16, Fingerprints: func() []string { return []string{"mint", "old"} }})
	if got := ids(v.Choose(netip.Addr{})); len(got) != len("a,b,stale") {
		t.Fatalf("Choose = %s, want a, b and stale", got)
	}
	must(t, st.SetNodeState(ctx, "b", store.NodeDraining))
	for i := 0; i < 20; i++ {
		if got := ids(v.Choose(netip.Addr{})); strings.Contains(got, "b") {
			t.Fatalf("draining node b chosen: %s", got)
		}
	}
	// Three heartbeats pass; all beat but stale.
	c.Add(3*hb + time.Second)
	for _, n := range []store.Node{node("a", "", 1, c.Now()), node("b", "", 1, c.Now()), foreign} {
		n.LastHeartbeat = c.Now()
		_, err := st.BeatNode(ctx, n)
		must(t, err)
	}
	must(t, v.Refresh(ctx))
	if got := ids(v.Choose(netip.Addr{})); got != "a" {
		t.Fatalf("after stale went silent: Choose = %s, want a", got)
	}
	for state, want := range map[string]float64{"serving": 2, "draining": 1, "down": 1} {
		if n := value(t, reg, "traverse_fleet_nodes", "state", state); n != want {
			t.Errorf("traverse_fleet_nodes{state=%s} = %v, want %v", state, n, want)
		}
	}
	if p := v.RingProblems(); len(p) != 1 || !strings.Contains(p[0], "foreign") {
		t.Errorf("RingProblems = %q, want one naming node foreign", p)
	}
	info := v.Nodes()
	if len(info) != 4 || info[2].ID != "foreign" || info[3].Status != fleet.StatusDown {
		t.Errorf("Nodes = %+v", info)
	}
}

// TestStoreDown: with the store closed, Choose answers from the last view,
// and the view's age grows.
func TestStoreDown(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	must(t, st.SaveNode(ctx, node("a", "", 1, c.Now())))
	v, reg := newView(t, st, c, fleet.ViewOptions{})
	st.Close()
	// Long past three heartbeats: the outage, not the node, stopped them.
	c.Add(2 * hb)
	for i := 0; i < 3; i++ {
		if got := ids(v.Choose(netip.Addr{})); got != "a" {
			t.Fatalf("store closed: Choose = %q, want a", got)
		}
	}
	if err := v.Refresh(ctx); err == nil {
		t.Fatal("Refresh on a closed store succeeded")
	}
	age, failing := v.Stale()
	if !failing || age != 2*hb {
		t.Fatalf("Stale = %s, %v; want 10s, true", age, failing)
	}
	c.Add(10 * hb)
	if got := ids(v.Choose(netip.Addr{})); got != "a" {
		t.Fatalf("store closed for 12 heartbeats: Choose = %q, want a", got)
	}
	if n := gauge(t, reg, "traverse_fleet_view_age_seconds"); n != 60 {
		t.Fatalf("traverse_fleet_view_age_seconds = %v, want 60", n)
	}
}

// TestRegistry: Start registers serving, Beat keeps a drain made elsewhere
// and re-registers a deleted row... and reports relayed bits/s.
func TestRegistry(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	ctx := context.Background()
	var relayed uint64
	r, err := fleet.NewRegistry(fleet.RegistryOptions{
		Store: st, ID: "n1", Heartbeat: hb, Now: c.Now,
		Describe: func() store.Node {
			return store.Node{PublicHost: "h", URIs: []string{"stun:h:1"}, Weight: 1, Allocations: 2}
		},
		BytesRelayed: func() uint64 { return relayed },
	})
	must(t, err)
	must(t, r.Start(ctx))
	c.Add(hb)
	relayed = 5 * 1000 * 1000 / 8 // 5 Mbit in 5 s
	must(t, r.Beat(ctx))
	nodes, err := st.ListNodes(ctx)
	must(t, err)
	if len(nodes) != 1 || nodes[0].BitsPerSecond != 1_000_000 || nodes[0].Allocations != 2 || !nodes[0].LastHeartbeat.Equal(c.Now()) {
		t.Fatalf("after a beat: %+v", nodes)
	}
	must(t, st.SetNodeState(ctx, "n1", store.NodeDraining))
	must(t, r.Beat(ctx))
	if r.State() != store.NodeDraining {
		t.Fatalf("State after a drain elsewhere = %s", r.State())
	}
	must(t, r.Start(ctx)) // a restart serves again
	if nodes, _ := st.ListNodes(ctx); nodes[0].State != store.NodeServing {
		t.Fatalf("after restart: %s", nodes[0].State)
	}
	must(t, r.Drain(ctx))
	if nodes, _ := st.ListNodes(ctx); nodes[0].State != store.NodeDraining || r.State() != store.NodeDraining {
		t.Fatalf("after Drain: %s", nodes[0].State)
	}
}

func TestLoadOrCreateID(t *testing.T) {
	dir := t.TempDir()
	id, err := fleet.LoadOrCreateID(dir)
	must(t, err)
	again, err := fleet.LoadOrCreateID(dir)
	must(t, err)
	if !fleet.ValidID(id) || id != again {
		t.Fatalf("ids %q then %q", id, again)
	}
}

func TestFingerprints(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	a := fleet.Fingerprints(k1, []string{"secret-one-0123456789", "secret-two-0123456789"})
	if len(a) != 2 || a[0] == a[1] || len(a[0]) != 16 || strings.Contains(a[0], "secret") {
		t.Fatalf("fingerprints %q", a)
	}
	if b := fleet.Fingerprints(k2, []string{"secret-one-0123456789"}); b[0] == a[0] {
		t.Fatal("fingerprint does not depend on the store key")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
