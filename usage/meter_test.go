package usage_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/traverse/traverse/relay"
	"github.com/traverse/traverse/store"
	_ "github.com/traverse/traverse/store/sqlite"
	"github.com/traverse/traverse/usage"
)

// allocations is the input a relay gives the Meter: its live allocations.
type allocations struct {
	mu   sync.Mutex
	list []relay.Allocation
}

func (a *allocations) Allocations() []relay.Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]relay.Allocation(nil), a.list...)
}

func (a *allocations) set(list ...relay.Allocation) {
	a.mu.Lock()
	a.list = list
	a.mu.Unlock()
}

const acct = "AC0123456789abcdef0123456789abcdef"

var hour = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

func alloc(id, account string, sent, received uint64) relay.Allocation {
	return relay.Allocation{ID: id, Account: account, Username: "1:x", Client: netip.MustParseAddrPort("127.0.0.1:1"),
		Relay: netip.MustParseAddrPort("127.0.0.1:2"), Transport: "udp",
		Traffic: relay.Traffic{BytesSent: sent, BytesReceived: received, PacketsSent: 1, PacketsReceived: 1}}
}

func openStore(t *testing.T) store.Store {
	st, err := store.OpenConfigured(context.Background(), t.TempDir(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func total(t *testing.T, st store.Store, account string) (sent, received int64) {
	rows, err := st.ListUsage(context.Background(), []string{account}, hour.Add(-time.Hour), hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		sent += r.BytesSent
		received += r.BytesReceived
	}
	return sent, received
}

// TestMeterDeltas: samples add only what is new; an ended allocation's
// last bytes count once; static users go to the default account; the live
// list is published and withdrawn at Close.
func TestMeterDeltas(t *testing.T) {
	st := openStore(t)
	defer st.Close()
	src := &allocations{}
	m := usage.New(usage.Options{Store: st, Relay: src, Node: "n1", DefaultAccount: "AC00000000000000000000000000000001",
		Now: func() time.Time { return hour.Add(10 * time.Minute) }})
	ctx := context.Background()

	src.set(alloc("RA1", acct, 100, 10), alloc("RA2", "", 5, 5))
	m.Sample()
	src.set(alloc("RA1", acct, 150, 20), alloc("RA2", "", 5, 5))
	m.Sample()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s, r := total(t, st, acct); s != 150 || r != 20 {
		t.Fatalf("after two samples: %d/%d, want 150/20", s, r)
	}
	live, err := st.ListLiveAllocations(ctx, []string{acct, "AC00000000000000000000000000000001"}, hour)
	if err != nil || len(live) != 2 {
		t.Fatalf("live list: %+v %v", live, err)
	}
	m.Ended(alloc("RA1", acct, 170, 20))
	src.set(alloc("RA2", "", 5, 5))
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s, r := total(t, st, acct); s != 170 || r != 20 {
		t.Fatalf("after the end: %d/%d, want 170/20", s, r)
	}
	if s, _ := total(t, st, "AC00000000000000000000000000000001"); s != 5 {
		t.Fatalf("default account: %d, want 5", s)
	}
	if live, _ := st.ListLiveAllocations(ctx, []string{acct}, hour); len(live) != 0 {
		t.Fatalf("live list after Close: %+v", live)
	}
}

// TestMeterOutage: while the store fails, usage stays in memory (bounded by
// MaxBuffered, the excess counted as dropped) and nothing blocks.
func TestMeterOutage(t *testing.T) {
	st := openStore(t)
	st.Close() // every call fails from now on
	reg := prometheus.NewRegistry()
	src := &allocations{}
	m := usage.New(usage.Options{Store: st, Relay: src, Node: "n1", MaxBuffered: 1, Registerer: reg,
		Now: func() time.Time { return hour }})
	src.set(alloc("RA1", acct, 100, 10), alloc("RA2", "AC00000000000000000000000000000002", 1, 1))
	m.Sample()
	if err := m.Flush(context.Background()); err == nil {
		t.Fatal("flush to a closed store succeeded")
	}
	if got := value(t, reg, "traverse_usage_buffered_rows"); got != 1 {
		t.Fatalf("buffered rows = %v, want 1", got)
	}
	if got := value(t, reg, "traverse_usage_dropped_rows_total"); got != 1 {
		t.Fatalf("dropped rows = %v, want 1 (MaxBuffered 1, two accounts)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.Close(ctx); err == nil {
		t.Fatal("Close with the store down reported success")
	}
}

// value reads a gauge or counter without labels.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}
