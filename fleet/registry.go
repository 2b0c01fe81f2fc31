package fleet

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/store"
)

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// Store holds the registry. Required.
	Store store.NodeStore
	// ID is this node's ID (LoadOrCreateID). Required.
	ID string
	// Describe returns what the node says about itself at each beat:
	// PublicHost, URIs, Region, Weight, Allocations, SecretFingerprints.
	// ID, State, times and BitsPerSecond are the Registry's. Required.
	Describe func() store.Node
	// BytesRelayed is the node's relayed payload so far (a counter), from
	// which the Registry derives bits/s over the last minute. Nil means 0.
	BytesRelayed func() uint64
	// Heartbeat is the interval between beats. Default 5s.
	Heartbeat time.Duration
	// Log gets registration and heartbeat failures; nil discards them.
	Log *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// rateWindow is the span of the relayed bits/s a node reports.
const rateWindow = time.Minute

// Registry keeps this node's row in the store: registered serving at Start,
// beaten every heartbeat, marked draining by Drain.
type Registry struct {
	o RegistryOptions

	mu      sync.Mutex
	state   store.NodeState
	changes int // local state changes, so a beat that raced one does not undo it
	started time.Time
	samples []byteSample // within rateWindow, oldest first
}

type byteSample struct {
	at    time.Time
	bytes uint64
}

// NewRegistry returns a Registry; nothing is written until Start.
func NewRegistry(o RegistryOptions) (*Registry, error) {
	if o.Store == nil || o.Describe == nil || !ValidID(o.ID) {
		return nil, errors.New("fleet: RegistryOptions needs Store, Describe and a valid ID")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BytesRelayed == nil {
		o.BytesRelayed = func() uint64 { return 0 }
	}
	return &Registry{o: o, state: store.NodeServing}, nil
}

// ID is this node's ID.
func (r *Registry) ID() string { return r.o.ID }

// State is this node's state as last written or read back from the store
// (a `traverse nodes drain` elsewhere shows here at the next beat).
func (r *Registry) State() store.NodeState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Start registers the node as serving: a node that starts again after a
// drain serves again.
func (r *Registry) Start(ctx context.Context) error {
	now := r.o.Now().UTC()
	r.mu.Lock()
	r.started, r.state = now, store.NodeServing
	r.changes++
	r.mu.Unlock()
	return r.o.Store.SaveNode(ctx, r.row(now))
}

// row is the node's row at now, in the current state.
func (r *Registry) row(now time.Time) store.Node {
	n := r.o.Describe()
	n.ID, n.LastHeartbeat = r.o.ID, now
	n.BitsPerSecond = r.rate(now)
	r.mu.Lock()
	n.State, n.Started = r.state, r.started
	r.mu.Unlock()
	return n
}

// rate records the byte counter at now and returns bits/s over the samples
// of the last rateWindow.
func (r *Registry) rate(now time.Time) int64 {
	b := r.o.BytesRelayed()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, byteSample{now, b})
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) >= rateWindow {
		r.samples = r.samples[1:]
	}
	first := r.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 || b < first.bytes {
		return 0
	}
	return int64(float64(b-first.bytes) * 8 / dt)
}

// Beat writes one heartbeat, registering again when the row is gone.
func (r *Registry) Beat(ctx context.Context) error {
	r.mu.Lock()
	changes := r.changes
	r.mu.Unlock()
	n := r.row(r.o.Now().UTC())
	state, err := r.o.Store.BeatNode(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		return r.o.Store.SaveNode(ctx, n)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changes != changes {
		return nil // Drain or Start ran meanwhile: their state is newer
	}
	if state != r.state {
		r.o.Log.Info("node state changed in the store", zap.String("state", string(state)))
	}
	r.state = state
	return nil
}

// Run beats every heartbeat until ctx is done. A failed beat is logged
// (once per outage) and retried at the next interval.
func (r *Registry) Run(ctx context.Context) {
	every(ctx, r.o.Heartbeat, r.o.Log, "heartbeat failed; retrying every interval", "heartbeat restored", r.Beat)
}

// Drain marks the node draining in the store: once it returns, no issuer
// hands the node out.
func (r *Registry) Drain(ctx context.Context) error {
	if err := r.o.Store.SetNodeState(ctx, r.o.ID, store.NodeDraining); err != nil {
		return err
	}
	r.mu.Lock()
	r.state = store.NodeDraining
	r.changes++
	r.mu.Unlock()
	return nil
}
