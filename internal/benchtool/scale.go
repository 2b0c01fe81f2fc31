package main

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"path/filepath"
	"syscall"
	"time"
)

// scaleSteps are the live allocations of the scale run, reached in turn on
// one freshly started server: the allocations of a step stay up in the next.
var scaleSteps = []int{100, 1000, 10000}

// scaleStep is what one step measured.
type scaleStep struct {
	Allocations  int
	RSSPerAllocK float64 // (VmRSS now − VmRSS of the fresh server) / allocations
	Media        mediaResult
}

// raiseNoFile lifts this process's descriptor limit towards want, which
// the servers it starts inherit (set through package syscall, so os/exec
// passes it on): 10,000 allocations are 10,000 client sockets here and at
// least as many relay sockets in each server (coturn keeps a socket per UDP
// client too). Without CAP_SYS_RESOURCE the hard limit caps it; it returns
// the limit in force.
func raiseNoFile(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= want {
		return l.Cur, nil
	}
	if l.Max < want {
		up := l
		up.Cur, up.Max = want, want
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return want, nil
		}
	}
	l.Cur = min(want, l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", l.Cur, err)
	}
	return l.Cur, nil
}

// startScaleServer starts a fresh traverse or coturn for a scale run, with
// o.scalePorts as its relay range (the two never run at once).
func startScaleServer(ctx context.Context, name string, o opts, dir, cert, key, profile string) (target, func(), error) {
	dir = filepath.Join(dir, "scale-"+name)
	if name == "traverse" {
		s, err := startTraverse(ctx, o.traverse, dir, o, travSetup{relay: true, ports: o.scalePorts, profile: profile})
		if err != nil {
			return target{}, nil, err
		}
		stop := s.stop
		if profile != "" {
			stop = func() { o.profiles.stopProfiled(s.proc, profile) }
		}
		return target{name: name, kind: "turn", addr: s.udp, server: s.proc}, stop, nil
	}
	s, err := startCoturn(dir, o, o.scalePorts, cert, key)
	if err != nil {
		return target{}, nil, err
	}
	return target{name: name, kind: "turn", addr: s.udp, server: s.proc}, s.stop, nil
}

// runScale brings a fresh server through the scale steps: at each it adds
// allocations (channels to peer) up to the step, then runs light traffic on
// all of them for dur and reads the server's RSS. A traverse server writes
// its CPU profile to profile when that is set (--profile).
func runScale(ctx context.Context, name string, o opts, dir, cert, key string, peer netip.AddrPort, steps []int, dur time.Duration, profile string) ([]scaleStep, error) {
	t, stop, err := startScaleServer(ctx, name, o, dir, cert, key, profile)
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(300 * time.Millisecond) // let start-up settle before the baseline
	rss0, err := rssKB(t.server.pid())
	if err != nil {
		return nil, err
	}
	var clients []*dataClient
	defer func() { closeClients(clients) }()
	var out []scaleStep
	for _, n := range steps {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		more, err := setupClients(t, o, peer, dataSpec{mode: "channel", size: 100, clients: n - len(clients), first: len(clients)})
		if err != nil {
			return out, fmt.Errorf("%d allocations: %w", n, err)
		}
		clients = append(clients, more...)
		flows := make([][]flow, len(clients))
		for i := range flows {
			flows[i] = []flow{lightFlow}
		}
		m, err := runMedia(t, clients, flows, dur)
		if err != nil {
			return out, err
		}
		rss, err := rssKB(t.server.pid())
		if err != nil {
			return out, err
		}
		st := scaleStep{Allocations: n, RSSPerAllocK: float64(rss-rss0) / float64(n), Media: m}
		log.Printf("  %-9s scale %5d allocations: cpu %6.2f µs/msg loss %5.2f%%, %.1f KB RSS each",
			name, n, m.CPUMicros, m.LossPct, st.RSSPerAllocK)
		out = append(out, st)
	}
	return out, nil
}

func (r *report) addScale(tgt string, steps []scaleStep) {
	for _, s := range steps {
		what := fmt.Sprintf("scale, %d live allocations, each 2 × 100 B/s", s.Allocations)
		short := fmt.Sprintf("%dk", s.Allocations/1000)
		if s.Allocations < 1000 {
			short = fmt.Sprint(s.Allocations)
		}
		r.add("server CPU per relayed message, "+what, "CPU scale "+short, "µs", false, tgt, s.Media.CPUMicros)
		r.add("resident memory per allocation, "+what, "RSS/alloc scale "+short, "KB", false, tgt, s.RSSPerAllocK)
		r.add("loss, "+what, "", "%", false, tgt, s.Media.LossPct)
	}
}
