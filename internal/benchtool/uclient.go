package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ucSpec is one turnutils_uclient scenario: coturn's own load generator
// over UDP, TCP (-t) or TLS (-t -S), paced or saturated, always over
// channels with 100-byte messages to turnutils_peer.
type ucSpec struct {
	transport string // "UDP", "TCP", "TLS"
	saturated bool
	procs     int // uclient processes run at once
	clients   int // -m, per process
	n         int // -n, messages per client
	interval  int // -z, ms
}

func (u ucSpec) String() string {
	load := "paced"
	if u.saturated {
		load = "saturated"
	}
	s := "turnutils_uclient " + load + ", 100 B, channel"
	if u.transport != "UDP" {
		s += ", " + u.transport
	}
	return s
}

// ucSpecs are the uclient scenarios: issue 14's paced one (50 clients, a
// message every 5 ms each) and saturated one (4 × 10 clients with no pause),
// over each transport.
func ucSpecs(o opts) []ucSpec {
	var specs []ucSpec
	for _, tr := range []string{"UDP", "TCP", "TLS"} {
		specs = append(specs,
			ucSpec{transport: tr, procs: 1, clients: o.ucClients, n: o.ucN, interval: 5},
			ucSpec{transport: tr, saturated: true, procs: 4, clients: 10, n: o.ucSatN, interval: 0})
	}
	return specs
}

// uclientResult is turnutils_uclient's report with the server's CPU.
type uclientResult struct {
	Sent, Received int64
	LossPct        float64
	CPUMicros      float64
	// MsgPerSec is messages relayed (sent and echoed) per second of the
	// uclient runs' wall time, set-up included.
	MsgPerSec float64
}

var (
	reTotals = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	reLost   = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\)`)
)

// runUclient drives t with coturn's own load generator: spec.procs
// processes at once, each spec.clients × spec.n messages of 100 bytes every
// spec.interval ms per client, over channels to peer. The server's CPU is
// taken over the whole of the runs (every thread's run time, in ns).
func runUclient(ctx context.Context, t target, o opts, peer netip.AddrPort, spec ucSpec) (uclientResult, error) {
	var r uclientResult
	cctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	addr := t.addr
	var flags []string
	switch spec.transport {
	case "TCP":
		flags = []string{"-t"}
	case "TLS":
		addr, flags = t.tls, []string{"-t", "-S"}
	}
	args := append(flags,
		"-W", o.secret, "-p", strconv.Itoa(int(addr.Port())),
		"-e", peer.Addr().String(), "-r", strconv.Itoa(int(peer.Port())),
		"-m", strconv.Itoa(spec.clients), "-n", strconv.Itoa(spec.n), "-l", "100",
		"-z", strconv.Itoa(spec.interval), "-X", "-c", addr.Addr().String())
	outs := make([][]byte, spec.procs)
	errs := make([]error, spec.procs)
	var wg sync.WaitGroup
	cpu0, _ := threadsCPU(t.server.pid())
	start := time.Now()
	for i := range spec.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = exec.CommandContext(cctx, "turnutils_uclient", args...).CombinedOutput()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := threadsCPU(t.server.pid())
	for i, out := range outs {
		if errs[i] != nil {
			return r, fmt.Errorf("turnutils_uclient %s: %w\n%s", strings.Join(args, " "), errs[i], tail(out, 2000))
		}
		var totals []string
		for _, line := range strings.Split(string(out), "\n") {
			if m := reTotals.FindStringSubmatch(line); m != nil {
				totals = m
			}
		}
		if totals == nil || reLost.FindStringSubmatch(string(out)) == nil {
			return r, fmt.Errorf("turnutils_uclient printed no final report:\n%s", tail(out, 2000))
		}
		sent, _ := strconv.ParseInt(totals[1], 10, 64)
		recv, _ := strconv.ParseInt(totals[2], 10, 64)
		r.Sent += sent
		r.Received += recv
	}
	if r.Sent > 0 {
		r.LossPct = 100 * float64(r.Sent-r.Received) / float64(r.Sent)
	}
	if h := r.Sent + r.Received; h > 0 {
		r.CPUMicros = float64(cpu1-cpu0) / 1e3 / float64(h)
		r.MsgPerSec = float64(h) / elapsed.Seconds()
	}
	return r, nil
}

func (r *report) addUclient(spec ucSpec, tgt string, u uclientResult) {
	short := "uclient " + map[bool]string{false: "paced", true: "sat."}[spec.saturated]
	if spec.transport != "UDP" {
		short += " " + spec.transport
	}
	r.add("server CPU per relayed message, "+spec.String(), "CPU "+short, "µs", false, tgt, u.CPUMicros)
	if spec.saturated {
		r.add("messages/s relayed, "+spec.String(), "msg/s "+short, "/s", true, tgt, u.MsgPerSec)
		r.add("messages delivered (echoes received), "+spec.String(), "", "", true, tgt, float64(u.Received))
	}
	r.add("loss, "+spec.String(), "", "%", false, tgt, u.LossPct)
}
