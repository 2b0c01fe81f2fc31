package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// --profile DIR: every scenario measured on traverse gets a `traverse serve`
// of its own, started with TRAVERSE_CPU_PROFILE=DIR/<scenario>.pprof and
// stopped (SIGTERM: serve stops the profile and closes the file) as soon as
// the scenario ends, so each profile holds that scenario and its start-up
// only. The shared relay server is stopped for the whole run, so that two
// processes never hold the relay range. At the end DIR/summary.txt gets the
// top of each profile, from `go tool pprof -top`, and the CPU the process
// used in all by /proc: the profiler samples on the kernel's CPU timers,
// which see little of a thread that runs in bursts of microseconds between
// sleeps (a paced scenario's), so its samples can fall well short of that.

// profileLog lists the profiles written, with the CPU their process used.
type profileLog struct {
	mu   sync.Mutex
	list []writtenProfile
}

type writtenProfile struct {
	path   string
	cpuSec float64 // utime+stime of the whole process; <0: unknown
}

// stopProfiled reads p's CPU time, stops it (which flushes its profile to
// path) and lists the profile.
func (l *profileLog) stopProfiled(p *proc, path string) {
	cpu := -1.0
	if t, err := cpuTicks(p.pid()); err == nil {
		cpu = float64(t) * tickSeconds
	}
	p.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, writtenProfile{path, cpu})
}

// profilePath is the profile file of a scenario in a round ("" without
// --profile): DIR/<slug>.pprof, with "-r<N>" before ".pprof" from the second
// round on.
func (o opts) profilePath(scenario string, round int) string {
	if o.profile == "" {
		return ""
	}
	name := slug(scenario)
	if round > 0 {
		name += fmt.Sprintf("-r%d", round+1)
	}
	return filepath.Join(o.profile, name+".pprof")
}

// slug makes a scenario's name a file name: lower case, runs of anything
// but letters and digits as one "-".
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
		} else {
			dash = true
		}
	}
	return b.String()
}

// profileName names a uclient scenario's profile: uclient-paced-udp, say.
func (u ucSpec) profileName() string {
	load := "paced"
	if u.saturated {
		load = "saturated"
	}
	return "uclient " + load + " " + u.transport
}

// profileName names a data scenario's profile: data-channel-100-paced, say.
func (d dataSpec) profileName() string {
	load := "paced"
	if d.rate == 0 {
		load = "saturated"
	}
	s := fmt.Sprintf("data %s %d %s", d.mode, d.size, load)
	if d.cPeer {
		s += " turnutils_peer"
	}
	return s
}

// profiledTarget returns t unchanged, and a no-op, unless --profile is on and
// t is traverse's shared relay: then a fresh relay server laid out the same,
// writing the scenario's profile, and the function that stops it (which
// flushes the profile). The shared server is stopped on first use.
func (e *env) profiledTarget(ctx context.Context, o opts, t target, scenario string, round int) (target, func(), error) {
	if o.profile == "" || t.server != e.trav.proc {
		return t, func() {}, nil
	}
	e.trav.stop()
	path := o.profilePath(scenario, round)
	dir := filepath.Join(e.dir, "traverse-"+strings.TrimSuffix(filepath.Base(path), ".pprof"))
	s, err := startTraverse(ctx, o.traverse, dir, o,
		travSetup{relay: true, ports: o.traversePorts, cert: e.cert, key: e.key, profile: path})
	if err != nil {
		return t, func() {}, err
	}
	p := t
	p.addr, p.tls, p.server = s.udp, s.tls, s.proc
	return p, func() { o.profiles.stopProfiled(s.proc, path) }, nil
}

// writeProfileSummary writes DIR/summary.txt: for each profile written, the
// top functions by flat CPU time (`go tool pprof -top -nodecount=12`).
func writeProfileSummary(ctx context.Context, o opts) error {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU profiles of traverse, one per scenario and round (%s); top %d functions by flat time.\n"+
		"Compare each profile's \"Total samples\" with the process's CPU: paced scenarios' short bursts are under-sampled.\n",
		time.Now().UTC().Format(time.RFC3339), profileTop)
	o.profiles.mu.Lock()
	profiles := o.profiles.list
	o.profiles.mu.Unlock()
	for _, wp := range profiles {
		p := wp.path
		fmt.Fprintf(&b, "\n== %s (the process used %.2f s of CPU in all)\n", filepath.Base(p), wp.cpuSec)
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(cctx, "go", "tool", "pprof", "-top",
			fmt.Sprintf("-nodecount=%d", profileTop), o.traverse, p).CombinedOutput()
		cancel()
		b.Write(out)
		if err != nil {
			fmt.Fprintf(&b, "(go tool pprof: %v)\n", err)
		}
	}
	path := filepath.Join(o.profile, "summary.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	log.Printf("%d CPU profiles in %s, their tops in %s", len(profiles), o.profile, path)
	return nil
}

// profileTop is how many functions summary.txt lists per profile.
const profileTop = 12
