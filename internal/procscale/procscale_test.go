package procscale

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestScalesWithTheLoad: an idle process drops to one processor; real work
// on every CPU brings all of them back; idle again, one; cancelled, the
// runtime's default. Needs a machine with more than one CPU, as CI's has.
func TestScalesWithTheLoad(t *testing.T) {
	if Pinned() {
		t.Skip("GOMAXPROCS is set in the environment: the scaler leaves it alone (by design)")
	}
	runtime.SetDefaultGOMAXPROCS()
	all := runtime.GOMAXPROCS(0)
	if all < 2 {
		t.Skipf("one CPU: nothing to scale (GOMAXPROCS %d)", all)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Options{Window: 50 * time.Millisecond, DownWindows: 4, Registerer: reg})
	}()

	waitProcs(t, 1, "idle")

	// Burn every CPU until the scaler has handed them back (bounded: the
	// burners stop when the wait ends, at the latest after its deadline).
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for !stop.Load() {
				for i := range 1 << 16 {
					x += i
				}
			}
			_ = x
		}()
	}
	waitProcs(t, all, "busy")
	stop.Store(true)
	wg.Wait()

	waitProcs(t, 1, "idle again")
	if got := value(t, reg, "traverse_runtime_procs"); got != 1 {
		t.Errorf("traverse_runtime_procs = %v, want 1", got)
	}
	if got := value(t, reg, "traverse_runtime_procs_changes_total"); got < 3 {
		t.Errorf("traverse_runtime_procs_changes_total = %v, want at least 3", got)
	}
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != all {
		t.Errorf("after Run: GOMAXPROCS %d, want the default %d back", got, all)
	}
}

func waitProcs(t *testing.T, want int, when string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: GOMAXPROCS %d, want %d", when, runtime.GOMAXPROCS(0), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// value reads a gauge or counter from the registry.
func value(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}
