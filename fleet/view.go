package fleet

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/traverse/traverse/store"
)

// ViewOptions configure a View.
type ViewOptions struct {
	// Store holds the registry. Required.
	Store store.NodeStore
	// Heartbeat is the fleet's heartbeat interval (node.heartbeat): the
	// view re-reads the list this often, and a node silent for DownAfter
	// intervals is down. Default 5s.
	Heartbeat time.Duration
	// PerToken is how many nodes Choose returns at most. Default 1.
	PerToken int
	// Regions maps clients to regions; OwnRegion (this issuer's
	// node.region) is the fallback preference.
	Regions   Regions
	OwnRegion string
	// Fingerprints returns this process's secret fingerprints (Fingerprints
	// of auth.secrets; the first mints). Choose skips nodes that cannot
	// verify the minting one, and RingProblems names nodes minting with a
	// secret missing here. Nil means no check.
	Fingerprints func() []string
	// StoreTimeout bounds each store read made while answering Choose.
	// Default 1s.
	StoreTimeout time.Duration
	// Log, Registerer, Now: as usual; nil discards, registers nowhere, time.Now.
	Log        *zap.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// View is an issuer's knowledge of the fleet. Choose checks the fleet
// version in the store on every call (one indexed read) and re-reads the
// list when it changed, so a drain is honoured as soon as it commits. When
// the store fails, Choose answers from the last list read, without waiting
// on the store again until the background refresh (Run) succeeds; the age
// of that list is the metric traverse_fleet_view_age_seconds.
type View struct {
	o       ViewOptions
	metrics *viewMetrics

	// degraded is set when a store read failed: Choose stops asking the
	// store until Refresh succeeds.
	degraded atomic.Bool

	mu       sync.Mutex
	nodes    []store.Node
	version  int64
	readAt   time.Time // when nodes was read; zero before the first read
	pending  map[string]float64
	rnd      *rand.Rand
	problems []string
}

// NewView returns a View; call Refresh once, then Run.
func NewView(o ViewOptions) (*View, error) {
	if o.Store == nil {
		return nil, errors.New("fleet: ViewOptions.Store is required")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.PerToken <= 0 {
		o.PerToken = 1
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Fingerprints == nil {
		o.Fingerprints = func() []string { return nil }
	}
	v := &View{o: o, pending: map[string]float64{}, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	m, err := newViewMetrics(o.Registerer, v.age)
	if err != nil {
		return nil, err
	}
	v.metrics = m
	return v, nil
}

// age is how old the list is, in seconds; 0 before the first read.
func (v *View) age() float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.readAt.IsZero() {
		return 0
	}
	return v.o.Now().Sub(v.readAt).Seconds()
}

// Refresh re-reads the list from the store.
func (v *View) Refresh(ctx context.Context) error {
	ver, err := v.o.Store.NodesVersion(ctx)
	if err == nil {
		err = v.reload(ctx, ver)
	}
	if err != nil {
		v.metrics.refreshErrors.Inc()
		v.degraded.Store(true)
		return err
	}
	v.degraded.Store(false)
	return nil
}

// reload reads the list and records it as of version ver.
func (v *View) reload(ctx context.Context, ver int64) error {
	nodes, err := v.o.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	now := v.o.Now()
	v.mu.Lock()
	v.nodes, v.version, v.readAt = nodes, ver, now
	// Credentials handed out lately count as load until the nodes' own
	// allocation counts catch up; halve them at each read.
	for id, p := range v.pending {
		if p < 0.01 {
			delete(v.pending, id)
		} else {
			v.pending[id] = p / 2
		}
	}
	v.mu.Unlock()
	v.observe(nodes, now)
	return nil
}

// observe sets traverse_fleet_nodes and logs new secret-ring problems.
func (v *View) observe(nodes []store.Node, now time.Time) {
	counts := map[Status]int{}
	for i := range nodes {
		counts[StatusOf(&nodes[i], v.o.Heartbeat, now)]++
	}
	for _, s := range statuses {
		v.metrics.nodes.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
	problems := ringProblems(nodes, v.o.Fingerprints(), v.o.Heartbeat, now)
	v.mu.Lock()
	old := v.problems
	v.problems = problems
	v.mu.Unlock()
	for _, p := range problems {
		if !slices.Contains(old, p) {
			v.o.Log.Error("secret ring incomplete: set the same auth.secrets on every node", zap.String("problem", p))
		}
	}
}

// Run refreshes every heartbeat until ctx is done.
func (v *View) Run(ctx context.Context) {
	every(ctx, v.o.Heartbeat, v.o.Log, "fleet view refresh failed; answering from the last view",
		"fleet view refreshed again", v.Refresh)
}

// Choose returns up to PerToken serving nodes for a client: of the
// client's region (Regions), else of OwnRegion, else of any region; the
// least loaded relative to weight, ties at random. Nodes down, draining, or
// unable to verify this process's minting secret are never returned. An
// empty result means no node qualifies (the caller falls back to its own
// URIs). Each node returned is counted in traverse_fleet_chosen_total.
func (v *View) Choose(client netip.Addr) []store.Node {
	if !v.degraded.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), v.o.StoreTimeout)
		err := v.sync(ctx)
		cancel()
		if err != nil {
			v.metrics.refreshErrors.Inc()
			v.degraded.Store(true)
			v.o.Log.Warn("fleet view: store unavailable; answering from the last view", zap.Error(err))
		}
	}
	mint := ""
	if fps := v.o.Fingerprints(); len(fps) > 0 {
		mint = fps[0]
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.statusTime()
	cands := make([]candidate, 0, len(v.nodes))
	for i := range v.nodes {
		n := &v.nodes[i]
		if StatusOf(n, v.o.Heartbeat, now) != StatusServing || len(n.URIs) == 0 {
			continue
		}
		if mint != "" && len(n.SecretFingerprints) > 0 && !slices.Contains(n.SecretFingerprints, mint) {
			continue
		}
		w := float64(max(n.Weight, 1))
		cands = append(cands, candidate{node: n, score: (float64(n.Allocations) + v.pending[n.ID]) / w})
	}
	chosen := pick(cands, v.o.PerToken, []string{v.o.Regions.Of(client), v.o.OwnRegion}, v.rnd)
	for _, n := range chosen {
		v.pending[n.ID]++
		v.metrics.chosen.WithLabelValues(n.ID).Inc()
	}
	return chosen
}

// sync re-reads the list when the fleet version moved since the last read.
func (v *View) sync(ctx context.Context) error {
	ver, err := v.o.Store.NodesVersion(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	same := ver == v.version && !v.readAt.IsZero()
	v.mu.Unlock()
	if same {
		return nil
	}
	return v.reload(ctx, ver)
}

// NodeInfo is one node as the view sees it, for `traverse nodes list` and
// the console.
type NodeInfo struct {
	store.Node
	// Status is serving, draining or down.
	Status Status
}

// Nodes is the last list read, with each node's status now (or, while the
// store is failing, as of that read).
func (v *View) Nodes() []NodeInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	return Describe(v.nodes, v.o.Heartbeat, v.statusTime())
}

// statusTime is when heartbeats are judged: now, or while the store fails,
// the time of the last read. Heartbeats stop reaching the store in an
// outage, which says nothing about whether the nodes are alive; the last
// view is the best knowledge there is. v.mu is held.
func (v *View) statusTime() time.Time {
	if v.degraded.Load() && !v.readAt.IsZero() {
		return v.readAt
	}
	return v.o.Now()
}

// Describe gives each node its status at now.
func Describe(nodes []store.Node, heartbeat time.Duration, now time.Time) []NodeInfo {
	out := make([]NodeInfo, len(nodes))
	for i, n := range nodes {
		out[i] = NodeInfo{Node: n, Status: StatusOf(&n, heartbeat, now)}
	}
	return out
}

// Stale reports how old the list is and whether the store is failing.
func (v *View) Stale() (age time.Duration, failing bool) {
	return time.Duration(v.age() * float64(time.Second)), v.degraded.Load()
}

// RingProblems names the live nodes that mint with a secret this process
// cannot verify, as of the last read. Empty when all is well.
func (v *View) RingProblems() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.problems)
}

// ringProblems lists, for each live node whose minting secret is not among
// mine, a sentence naming it (never the secret).
func ringProblems(nodes []store.Node, mine []string, heartbeat time.Duration, now time.Time) []string {
	if len(mine) == 0 {
		return nil
	}
	var out []string
	for i := range nodes {
		n := &nodes[i]
		if StatusOf(n, heartbeat, now) == StatusDown || len(n.SecretFingerprints) == 0 {
			continue
		}
		if !slices.Contains(mine, n.SecretFingerprints[0]) {
			out = append(out, "node "+n.ID+" mints with a secret missing from this node's auth.secrets")
		}
	}
	return out
}
