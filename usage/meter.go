// Package usage meters what the relay relays, per account, and applies
// revocations to it. The Meter samples the relay's per-allocation counters
// (plain atomics each relay socket owns: the data path does nothing for
// metering but add to them), turns the differences into hourly buckets per
// account and flushes them to the store, where several nodes' buckets add
// up; it also publishes the node's live allocations for the sessions API.
// Watch applies the store's revocations to the relay as soon as the store
// signals them (PostgreSQL LISTEN/NOTIFY, or at once on SQLite), with a
// periodic re-read as the safety net.
package usage

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/traverse/traverse/relay"
	"github.com/traverse/traverse/store"
)

// Relay is what the Meter reads: the relay's live allocations.
type Relay interface {
	Allocations() []relay.Allocation
}

// Options configure a Meter.
type Options struct {
	// Store receives the usage rows and the live allocation list.
	Store store.Usage
	// Relay is sampled at every flush; nil until SetRelay.
	Relay Relay
	// Node names this node in the live allocation list.
	Node string
	// Region is written with every row (usage.region); may be empty.
	Region string
	// DefaultAccount is billed for allocations whose username names no
	// account (static users, `traverse credentials`); empty leaves them
	// unbilled.
	DefaultAccount string
	// FlushInterval is the time between flushes (usage.flush_interval).
	FlushInterval time.Duration
	// MaxBuffered bounds the buckets held while the store is unreachable;
	// beyond it new buckets are dropped and counted.
	MaxBuffered int
	Log         *zap.Logger
	Registerer  prometheus.Registerer
	Now         func() time.Time
}

// bucket is one row's key.
type bucket struct {
	account string
	hour    int64 // Unix seconds, truncated to the hour
}

// Meter turns relay traffic into usage rows. Its methods are safe for
// concurrent use; the relay's hooks (Ended, Created) only take its lock.
type Meter struct {
	opts    Options
	log     *zap.Logger
	now     func() time.Time
	metrics *metrics

	mu      sync.Mutex
	relay   Relay
	last    map[string]relay.Traffic // by allocation ID: counts already taken
	pending map[bucket]relay.Traffic // not yet in the store

	flushMu sync.Mutex // one flush at a time
	started bool       // set by Start, before any Close
	poke    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closed  sync.Once
}

// New makes a Meter; Start runs its flush loop.
func New(opts Options) *Meter {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 10 * time.Second
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = 100000
	}
	return &Meter{
		opts: opts, log: opts.Log, now: opts.Now, metrics: newMetrics(opts.Registerer),
		relay: opts.Relay,
		last:  map[string]relay.Traffic{}, pending: map[bucket]relay.Traffic{},
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// SetRelay gives the Meter the relay to sample (made after the Meter,
// since the relay's hooks call the Meter).
func (m *Meter) SetRelay(r Relay) {
	m.mu.Lock()
	m.relay = r
	m.mu.Unlock()
}

// Start runs the flush loop until Close.
func (m *Meter) Start() {
	m.started = true
	go m.loop()
}

// minPokeGap spaces the flushes that allocation events ask for, so that
// allocation churn costs the store at most one flush (and one rewrite of
// the node's live list) a second.
const minPokeGap = time.Second

func (m *Meter) loop() {
	defer close(m.done)
	t := time.NewTicker(m.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.poke:
			select {
			case <-m.stop:
				return
			case <-time.After(minPokeGap):
			}
		}
		m.Sample()
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.FlushInterval)
		_ = m.Flush(ctx)
		cancel()
	}
}

// Created is the relay's OnAllocationCreated: the live list is published soon.
func (m *Meter) Created(relay.Allocation) { m.wake() }

// Ended is the relay's OnAllocationEnded: its last traffic is taken, and a
// flush follows soon.
func (m *Meter) Ended(a relay.Allocation) {
	m.mu.Lock()
	m.take(a)
	delete(m.last, a.ID)
	m.mu.Unlock()
	m.wake()
}

func (m *Meter) wake() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// Sample takes the traffic of every live allocation since the last sample.
func (m *Meter) Sample() {
	// The lock is held across the read, so that an allocation ending
	// meanwhile (Ended) is taken either before the read, and then is not
	// in it, or after it, from what the read took: never twice. Ended is
	// called with no relay lock held, so this cannot deadlock.
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.relay == nil {
		return
	}
	for _, a := range m.relay.Allocations() {
		m.take(a)
	}
}

// take adds a's traffic since the last take to its bucket; m.mu is held.
func (m *Meter) take(a relay.Allocation) {
	d := a.Traffic.Sub(m.last[a.ID])
	m.last[a.ID] = a.Traffic
	if d == (relay.Traffic{}) {
		return
	}
	acct := a.Account
	if acct == "" {
		acct = m.opts.DefaultAccount
	}
	if acct == "" {
		m.metrics.unbilledBytes.Add(float64(d.BytesSent + d.BytesReceived))
		return
	}
	b := bucket{acct, m.now().UTC().Truncate(time.Hour).Unix()}
	t, ok := m.pending[b]
	if !ok && len(m.pending) >= m.opts.MaxBuffered {
		m.metrics.dropped.Inc()
		return
	}
	m.pending[b] = add(t, d)
	m.metrics.buffered.Set(float64(len(m.pending)))
}

func add(a, b relay.Traffic) relay.Traffic {
	return relay.Traffic{BytesSent: a.BytesSent + b.BytesSent, BytesReceived: a.BytesReceived + b.BytesReceived,
		PacketsSent: a.PacketsSent + b.PacketsSent, PacketsReceived: a.PacketsReceived + b.PacketsReceived}
}

// Flush writes the buffered rows and the live allocation list to the store.
// On failure the rows stay buffered for the next flush.
func (m *Meter) Flush(ctx context.Context) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	taken := m.pending
	m.pending = map[bucket]relay.Traffic{}
	r := m.relay
	m.mu.Unlock()

	rows := make([]store.UsageRow, 0, len(taken))
	for b, t := range taken {
		rows = append(rows, store.UsageRow{AccountSid: b.account, Region: m.opts.Region, Hour: time.Unix(b.hour, 0).UTC(),
			BytesSent: int64(t.BytesSent), BytesReceived: int64(t.BytesReceived),
			PacketsSent: int64(t.PacketsSent), PacketsReceived: int64(t.PacketsReceived)})
	}
	err := m.opts.Store.AddUsage(ctx, rows)
	if err != nil {
		m.mu.Lock()
		for b, t := range taken { // back in, ahead of any limit: nothing stored is lost
			m.pending[b] = add(m.pending[b], t)
		}
		m.metrics.buffered.Set(float64(len(m.pending)))
		m.mu.Unlock()
		m.metrics.flushes.WithLabelValues("error").Inc()
		m.log.Warn("usage flush failed; kept in memory", zap.Int("rows", len(rows)), zap.Error(err))
		return err
	}
	m.mu.Lock()
	m.metrics.buffered.Set(float64(len(m.pending)))
	m.mu.Unlock()
	m.metrics.flushes.WithLabelValues("ok").Inc()
	if r != nil {
		if perr := m.publish(ctx, r.Allocations()); perr != nil {
			m.log.Warn("live allocation list not published", zap.Error(perr))
		}
	}
	return nil
}

// publish replaces this node's live allocation list in the store.
func (m *Meter) publish(ctx context.Context, allocs []relay.Allocation) error {
	out := make([]store.LiveAllocation, 0, len(allocs))
	for _, a := range allocs {
		acct := a.Account
		if acct == "" {
			acct = m.opts.DefaultAccount
		}
		out = append(out, store.LiveAllocation{
			ID: a.ID, Node: m.opts.Node, AccountSid: acct, Username: a.Username,
			Client: a.Client.String(), Transport: a.Transport, Relay: a.Relay.String(),
			Created: a.Created, Expires: a.Expires, Permissions: a.Permissions, Channels: a.Channels,
			BytesSent: int64(a.Traffic.BytesSent), BytesReceived: int64(a.Traffic.BytesReceived),
		})
	}
	return m.opts.Store.PutLiveAllocations(ctx, m.opts.Node, out, m.now())
}

// Close stops the loop and flushes what is buffered, retrying until ctx is
// done; then it withdraws the node's live allocation list. The caller
// samples the relay (Sample) before closing it, and closes the Meter after.
func (m *Meter) Close(ctx context.Context) error {
	var err error
	m.closed.Do(func() {
		close(m.stop)
		if m.started {
			<-m.done
		}
		for {
			if err = m.Flush(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				m.mu.Lock()
				n := len(m.pending)
				m.mu.Unlock()
				m.metrics.dropped.Add(float64(n))
				m.log.Error("usage lost at shutdown: the store stayed unreachable", zap.Int("rows", n))
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		m.mu.Lock()
		m.relay = nil
		m.mu.Unlock()
		err = m.publish(ctx, nil)
	})
	return err
}
