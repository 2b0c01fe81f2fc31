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
	reg := prometheus.NewRegistry()
	all, stopScaler := startScaler(t, Options{Window: 50 * time.Millisecond, DownWindows: 4, Registerer: reg})

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
	// Up for the burners, down after them; starting on one is not a change.
	if got := value(t, reg, "traverse_runtime_procs_changes_total"); got < 2 {
		t.Errorf("traverse_runtime_procs_changes_total = %v, want at least 2", got)
	}
	stopScaler()
	if got := runtime.GOMAXPROCS(0); got != all {
		t.Errorf("after Run: GOMAXPROCS %d, want the default %d back", got, all)
	}
}

// TestStartsOnOneProcessor: a process starts idle, so the scaler puts it on
// one processor at once, not after DownWindows of idle windows (here more
// than the test waits): a light load that comes early must not run on
// every processor, where it costs more and so may never drop under Down.
func TestStartsOnOneProcessor(t *testing.T) {
	reg := prometheus.NewRegistry()
	startScaler(t, Options{Window: time.Second, DownWindows: 1000, Registerer: reg})
	waitProcs(t, 1, "started")
	if got := value(t, reg, "traverse_runtime_procs"); got != 1 {
		t.Errorf("traverse_runtime_procs = %v, want 1", got)
	}
}

// TestIdleReadsSeldom: an idle process is read once per IdleWindow, not
// once per Window: on a VM each read is a wake-up from idle, which cost
// more than the rest of an idle relay. Counted over a second: with a 10 ms
// window a busy scaler reads about 100 times, an idle one about 4 times
// (a 250 ms idle window); anything under 20 shows the back-off.
func TestIdleReadsSeldom(t *testing.T) {
	var reads atomic.Int64
	cpuTime = func() time.Duration { reads.Add(1); return readCPUTime() }
	defer func() { cpuTime = readCPUTime }()
	_, stop := startScaler(t, Options{Window: 10 * time.Millisecond, DownWindows: 2, IdleWindow: 250 * time.Millisecond})
	waitProcs(t, 1, "idle")
	before := reads.Load()
	time.Sleep(time.Second)
	n := reads.Load() - before
	stop()
	if n >= 20 {
		t.Errorf("idle on one processor for a second: %d reads of the CPU time, want about 4 (one per IdleWindow)", n)
	}
	if n == 0 {
		t.Error("idle for a second: no read at all, so load would never be seen")
	}
}

// startScaler runs Run with o from the runtime's default processors, and
// returns how many that is and a stop that cancels it and waits for it to
// return (also run when the test ends). It skips the test where there is
// nothing to scale.
func startScaler(t *testing.T, o Options) (all int, stop func()) {
	t.Helper()
	if Pinned() {
		t.Skip("GOMAXPROCS is set in the environment: the scaler leaves it alone (by design)")
	}
	runtime.SetDefaultGOMAXPROCS()
	if all = runtime.GOMAXPROCS(0); all < 2 {
		t.Skipf("one CPU: nothing to scale (GOMAXPROCS %d)", all)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, o)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	return all, stop
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
