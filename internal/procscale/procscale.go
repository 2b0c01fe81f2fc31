// Package procscale runs the process on one processor (GOMAXPROCS=1) while
// it is lightly loaded and on every CPU it may use when it is not.
//
// Why: at media rates the relay goes idle between most packets, and every
// idle-to-busy wake-up on a multi-P Go runtime also wakes a second thread
// that spins looking for more work and finds none. On the 2-core bench
// machine that spinning made a paced relayed message cost twice the CPU it
// costs on one P (turnutils_uclient, 50 clients at 200 messages/s each:
// 24-25 µs against 12-16 µs, and 17.5k against 6.3k context switches; see
// docs/design.md). When the load needs more than one core the scaler hands
// the runtime its default back within one window.
//
// It imports nothing of this module; the server starts it.
package procscale

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Options tune the scaler; the zero value of each field takes its default.
type Options struct {
	// Window is how often the process's CPU use is read. Default 200ms.
	Window time.Duration
	// Up is the CPU use, in cores, at which one processor is no longer
	// enough. Default 0.6: well before one core saturates.
	Up float64
	// Down is the CPU use, in cores, under which all processors are given
	// up for one, after DownWindows windows in a row. Defaults 0.5 and 10
	// (2 s). The same load costs less on one processor than on several,
	// so a load under Down on several stays under Up on one and the
	// scaler does not flap. Down is not lower because a load that costs
	// 0.3-0.5 of a core on several processors then stays on them for
	// good, paying their wake-ups (the call mix of 250 allocations: 0.3
	// of a core and 8 µs a message on two, 6.3 µs on one).
	Down        float64
	DownWindows int
	// Idle is the CPU use, in cores, under which the process counts as
	// idle, and IdleWindow how often it is read then. Defaults 0.1 and
	// 1s. Why: on a VM each read wakes the process from idle, and five
	// wake-ups a second were three quarters of an idle relay's CPU
	// (1.1 ms a second, against 0.3 without the scaler); load that grows
	// out of idle is seen within IdleWindow.
	Idle       float64
	IdleWindow time.Duration
	// Registerer receives traverse_runtime_procs and
	// traverse_runtime_procs_changes_total; nil registers nothing.
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.Window <= 0 {
		o.Window = 200 * time.Millisecond
	}
	if o.Up <= 0 {
		o.Up = 0.6
	}
	if o.Down <= 0 {
		o.Down = 0.5
	}
	if o.DownWindows <= 0 {
		o.DownWindows = 10
	}
	if o.Idle <= 0 {
		o.Idle = 0.1
	}
	if o.IdleWindow <= 0 {
		o.IdleWindow = time.Second
	}
	o.IdleWindow = max(o.IdleWindow, o.Window)
}

// Run scales GOMAXPROCS until ctx is done, then gives the runtime its
// default back. It returns at once when the runtime has one processor
// anyway, or when the GOMAXPROCS environment variable says how many to use:
// the operator's choice stands.
func Run(ctx context.Context, o Options) {
	o.defaults()
	if Pinned() || runtime.GOMAXPROCS(0) <= 1 {
		return
	}
	procs := prometheus.NewGauge(prometheus.GaugeOpts{Name: "traverse_runtime_procs",
		Help: "Processors the Go runtime runs on (GOMAXPROCS): 1 while the load is light, all when it is not (relay.adaptive_procs)."})
	changes := prometheus.NewCounter(prometheus.CounterOpts{Name: "traverse_runtime_procs_changes_total",
		Help: "Times relay.adaptive_procs changed the number of processors."})
	if o.Registerer != nil {
		o.Registerer.MustRegister(procs, changes)
		defer o.Registerer.Unregister(procs)
		defer o.Registerer.Unregister(changes)
	}
	defer runtime.SetDefaultGOMAXPROCS()
	// A process starts idle, so on one processor: otherwise a light load
	// that arrives within DownWindows of the start runs on all of them
	// until it has stayed under Down that long. The first window with
	// load hands the rest over.
	procs.Set(1)
	runtime.GOMAXPROCS(1)

	t := time.NewTimer(o.Window)
	defer t.Stop()
	lastCPU, lastWall := cpuTime(), time.Now()
	low := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cpu, wall := cpuTime(), time.Now()
		used := float64(cpu-lastCPU) / float64(wall.Sub(lastWall))
		lastCPU, lastWall = cpu, wall
		cur := runtime.GOMAXPROCS(0)
		if cur == 1 && used < o.Idle {
			t.Reset(o.IdleWindow)
		} else {
			t.Reset(o.Window)
		}
		switch {
		case cur == 1 && used >= o.Up:
			runtime.SetDefaultGOMAXPROCS()
			low = 0
		case cur > 1 && used <= o.Down:
			if low++; low < o.DownWindows {
				continue
			}
			runtime.GOMAXPROCS(1)
			low = 0
		default:
			low = 0
			continue
		}
		if now := runtime.GOMAXPROCS(0); now != cur {
			procs.Set(float64(now))
			changes.Inc()
		}
	}
}

// Pinned reports that the GOMAXPROCS environment variable fixes the number
// of processors, so Run leaves it alone.
func Pinned() bool { return os.Getenv("GOMAXPROCS") != "" }

// cpuTime is the CPU time the process has used, user and system; a
// variable so a test can count the reads.
var cpuTime = readCPUTime

func readCPUTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
