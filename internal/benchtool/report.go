package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// stat is one metric's samples for one target, over the rounds.
type stat struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// row is one metric across the targets.
type row struct {
	Metric string           `json:"metric"`
	Short  string           `json:"short"`
	Unit   string           `json:"unit"`
	Higher bool             `json:"higher_is_better"`
	Values map[string]*stat `json:"values"`
	// Ratio is traverse's median over coturn's, when both have one.
	Ratio float64 `json:"ratio_traverse_coturn,omitempty"`
}

// report is the whole run.
type report struct {
	Date     string  `json:"date"`
	Command  string  `json:"command"`
	Machine  string  `json:"machine"`
	Go       string  `json:"go"`
	Coturn   string  `json:"coturn"`
	Quick    bool    `json:"quick"`
	Rounds   int     `json:"rounds"`
	Threads  int     `json:"threads"`
	Accounts int     `json:"issuer_accounts"`
	Duration string  `json:"load_duration"`
	Seconds  float64 `json:"seconds"`
	Rows     []*row  `json:"rows"`
	// Note is the operator's remark on the run (--note): the load, say.
	Note string `json:"note,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure when the run started and
	// when it ended: how busy the machine was besides the bench.
	LoadAvg [2]float64 `json:"loadavg_1min_start_end"`
	// StealPct is the share of the machine's CPU time the hypervisor gave
	// to other guests during the run (/proc/stat): one sign of neighbours'
	// load, which moves both servers' figures and which the load average
	// does not show (their use of shared caches shows nowhere).
	StealPct float64 `json:"steal_pct"`
	stat0    machineTicks
	// NoFile is RLIMIT_NOFILE of the bench and its servers.
	NoFile uint64 `json:"rlimit_nofile"`
	// Failures are measurements that could not be taken.
	Failures []string `json:"failures,omitempty"`
}

var targetOrder = []string{"traverse", "coturn", "forwarder", "ping-pong"}

func newReport(o opts) *report {
	return &report{
		Date:     time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Command:  o.command,
		Machine:  machine(),
		Go:       runtime.Version(),
		Coturn:   coturnVersion(),
		Quick:    o.quick,
		Rounds:   o.rounds,
		Threads:  o.threads,
		Accounts: o.accounts,
		Note:     o.note,
		LoadAvg:  [2]float64{loadAvg(), 0},
		stat0:    readMachineTicks(),
		NoFile:   o.nofile,
		Duration: o.dur.String(),
	}
}

func (r *report) add(metric, short, unit string, higher bool, tgt string, v float64) {
	var rw *row
	for _, x := range r.Rows {
		if x.Metric == metric {
			rw = x
		}
	}
	if rw == nil {
		rw = &row{Metric: metric, Short: short, Unit: unit, Higher: higher, Values: map[string]*stat{}}
		r.Rows = append(r.Rows, rw)
	}
	s := rw.Values[tgt]
	if s == nil {
		s = &stat{}
		rw.Values[tgt] = s
	}
	s.Samples = append(s.Samples, v)
}

func (r *report) addData(spec dataSpec, tgt string, d dataResult) {
	short := fmt.Sprintf("%d B %s", spec.size, map[string]string{"channel": "chan", "send": "send"}[spec.mode])
	if spec.rate > 0 {
		r.add("server CPU per relayed message, "+spec.String(), "CPU paced "+short, "µs", false, tgt, d.CPUMicros)
		r.add("loss, "+spec.String(), "", "%", false, tgt, d.LossPct)
		r.add("round trip p50, "+spec.String(), "RTT p50 "+short, "µs", false, tgt, d.P50Micros)
		r.add("round trip p99, "+spec.String(), "RTT p99 "+short, "µs", false, tgt, d.P99Micros)
		return
	}
	r.add("server CPU per relayed message, "+spec.String(), "CPU sat. "+short, "µs", false, tgt, d.CPUMicros)
	r.add("messages/s relayed, "+spec.String(), "msg/s sat. "+short, "/s", true, tgt, d.MsgPerSec)
	r.add("loss, "+spec.String(), "", "%", false, tgt, d.LossPct)
	r.add("load generator and peer CPU per relayed message (share the cores), "+spec.String(), "", "µs", false, tgt, d.LoadCPUMicros)
}

// addAlloc records the allocation run; memory only from the first round,
// when the processes are fresh: afterwards both reuse what the first round
// grew (coturn's malloc keeps freed memory), and the delta means nothing.
func (r *report) addAlloc(tgt string, a allocResult, fresh bool) {
	r.add("authenticated allocations/s (the best level)", "alloc/s", "/s", true, tgt, a.PerSec)
	r.add("server CPU per authenticated allocation (at the best level)", "CPU/alloc", "µs", false, tgt, a.ServerCPUMicros)
	r.add("load generator CPU per allocation (shares the cores)", "", "µs", false, tgt, a.ClientCPUMicros)
	for _, p := range a.Levels {
		r.add(fmt.Sprintf("authenticated allocations/s, %d in flight", p.InFlight), "", "/s", true, tgt, p.PerSec)
	}
	if fresh {
		r.add("authenticated allocations/s, freshly started server (first round)", "", "/s", true, tgt, a.ColdPerSec)
		r.add("resident memory per held allocation (first round)", "RSS/alloc", "KB", false, tgt, a.RSSPerAllocK)
	}
}

func (r *report) finish() {
	r.LoadAvg[1] = loadAvg()
	r.StealPct = readMachineTicks().stealPct(r.stat0)
	for _, rw := range r.Rows {
		for _, s := range rw.Values {
			v := slices.Clone(s.Samples)
			slices.Sort(v)
			s.Min, s.Max = v[0], v[len(v)-1]
			if len(v)%2 == 1 {
				s.Median = v[len(v)/2]
			} else {
				s.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
		}
		t, c := rw.Values["traverse"], rw.Values["coturn"]
		if t != nil && c != nil && c.Median != 0 {
			rw.Ratio = t.Median / c.Median
		}
	}
}

func (r *report) write(o opts) error {
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if o.pngOut != "" {
		if err := r.chart(o.pngOut); err != nil {
			return err
		}
	}
	if o.mdOut != "" {
		if err := os.WriteFile(o.mdOut, []byte(r.markdown(o)), 0o644); err != nil {
			return err
		}
	}
	fmt.Print(r.table())
	return nil
}

func format(v float64) string {
	switch a := abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func cell(s *stat) string {
	if s == nil {
		return ""
	}
	if len(s.Samples) == 1 {
		return format(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", format(s.Median), format(s.Min), format(s.Max))
}

// table is the markdown table of every row.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| metric | unit | traverse | coturn | traverse/coturn | Go forwarder | ping-pong |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, rw := range r.Rows {
		ratio := ""
		if rw.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f×", rw.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", rw.Metric, rw.Unit,
			cell(rw.Values["traverse"]), cell(rw.Values["coturn"]), ratio,
			cell(rw.Values["forwarder"]), cell(rw.Values["ping-pong"]))
	}
	return b.String()
}

func (r *report) find(metric string) *row {
	for _, rw := range r.Rows {
		if rw.Metric == metric {
			return rw
		}
	}
	return nil
}

// targets compares the run with issue 6's targets.
func (r *report) targets() string {
	var b strings.Builder
	ratio := func(metric string, want float64, atMost bool, label string) {
		rw := r.find(metric)
		if rw == nil || rw.Ratio == 0 {
			return
		}
		ok := rw.Ratio <= want
		if !atMost {
			ok = rw.Ratio >= want
		}
		verdict := "met"
		if !ok {
			verdict = fmt.Sprintf("missed by %.0f %%", 100*abs(rw.Ratio-want)/want)
		}
		op := "≥"
		if atMost {
			op = "≤"
		}
		fmt.Fprintf(&b, "| %s | %s %.1f× | %.2f× | %s |\n", label, op, want, rw.Ratio, verdict)
	}
	b.WriteString("| target (issue 6) | wanted | measured | |\n|---|---|---|---|\n")
	ratio("server CPU per relayed message, paced 10k msg/s, 100 B, channel", 1.0, true, "CPU per message, paced, 100 B channels")
	ratio("server CPU per relayed message, saturated, 100 B, channel", 0.8, true, "CPU per message, saturated, 100 B channels")
	ratio("messages/s relayed, saturated, 100 B, channel", 1.2, false, "messages/s at saturation, 100 B channels")
	ratio("authenticated allocations/s (the best level)", 2.0, false, "allocation rate")
	ratio("resident memory per held allocation (first round)", 0.5, true, "memory per live allocation")
	if rw := r.find(issuerMetric("SQLite", "Tokens created/s (wrk, 16 connections)", r.Accounts)); rw != nil {
		v := rw.Values["traverse"].Median
		verdict := "met"
		if v < 20000 {
			verdict = fmt.Sprintf("missed by %.0f %%", 100*(20000-v)/20000)
		}
		fmt.Fprintf(&b, "| issuer Tokens/s | ≥ 20,000 | %.0f | %s |\n", v, verdict)
	}
	if rw := r.find(issuerMetric("SQLite", "Tokens p99 latency", r.Accounts)); rw != nil {
		v := rw.Values["traverse"].Median
		verdict := "met"
		if v >= 10 {
			verdict = fmt.Sprintf("missed by %.0f %%", 100*(v-10)/10)
		}
		fmt.Fprintf(&b, "| issuer p99 | < 10 ms | %.2f ms | %s |\n", v, verdict)
	}
	return b.String()
}

// targets14 compares the run with issue 14's targets, and lists the
// TCP/TLS ratios that issue 16 asks for without a target.
func (r *report) targets14(o opts) string {
	var b strings.Builder
	b.WriteString("| target (issue 14) | wanted | measured | |\n|---|---|---|---|\n")
	line := func(metric string, want float64, atMost bool, label string) {
		rw := r.find(metric)
		if rw == nil || rw.Ratio == 0 {
			fmt.Fprintf(&b, "| %s | %s | not measured | |\n", label, wanted(want, atMost))
			return
		}
		verdict := "no target"
		if want > 0 {
			ok := rw.Ratio <= want
			if !atMost {
				ok = rw.Ratio >= want
			}
			verdict = "met"
			if !ok {
				verdict = fmt.Sprintf("missed by %.1f %%", 100*abs(rw.Ratio-want)/want)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f× | %s |\n", label, wanted(want, atMost), rw.Ratio, verdict)
	}
	uc := func(tr string, sat bool) string { return ucSpec{transport: tr, saturated: sat}.String() }
	line("server CPU per relayed message, "+uc("UDP", false), 0.8, true, "uclient paced (50 clients, -z 5): CPU per message")
	line("server CPU per relayed message, "+uc("UDP", true), 0.6, true, "uclient saturated (4 × -m 10 -z 0): CPU per message")
	line("messages delivered (echoes received), "+uc("UDP", true), 1.0, false, "uclient saturated: messages delivered")
	for _, n := range o.callMix {
		mix := callMixName(n)
		line("server CPU per relayed message, "+mix, 0.7, true, fmt.Sprintf("call mix (%d allocations): CPU per message", n))
		line("round trip p99, "+mix, 1.0, true, fmt.Sprintf("call mix (%d allocations): p99 round trip", n))
		if rw := r.find("loss, " + mix); rw != nil && rw.Values["traverse"] != nil && rw.Values["coturn"] != nil {
			fmt.Fprintf(&b, "| call mix (%d allocations): loss | (shown) | traverse %.2f %%, coturn %.2f %% | |\n",
				n, rw.Values["traverse"].Median, rw.Values["coturn"].Median)
		}
	}
	for _, n := range scaleSteps {
		what := fmt.Sprintf("scale, %d live allocations, each 2 × 100 B/s", n)
		line("server CPU per relayed message, "+what, 0, true, fmt.Sprintf("scale %d: CPU per message", n))
		want := 0.0
		if n == scaleSteps[len(scaleSteps)-1] {
			want = 0.4
		}
		line("resident memory per allocation, "+what, want, true, fmt.Sprintf("scale %d: RSS per allocation", n))
	}
	for _, tr := range []string{"TCP", "TLS"} {
		for _, sat := range []bool{false, true} {
			load := "paced"
			if sat {
				load = "saturated"
			}
			line("server CPU per relayed message, "+uc(tr, sat), 1.0, true, fmt.Sprintf("uclient %s %s: CPU per message", tr, load))
		}
	}
	for _, be := range []string{"SQLite", "PostgreSQL"} {
		rw := r.find(issuerMetric(be, "Tokens created/s (wrk, 16 connections)", r.Accounts))
		p99 := r.find(issuerMetric(be, "Tokens p99 latency", r.Accounts))
		if rw == nil || p99 == nil {
			continue
		}
		v, p := rw.Values["traverse"].Median, p99.Values["traverse"].Median
		verdict := "reported"
		if be == "SQLite" {
			verdict = "met"
			if v < 20000 || p >= 10 {
				verdict = "missed"
			}
		}
		fmt.Fprintf(&b, "| issuer on %s, %d accounts: Tokens/s, p99 | %s | %.0f/s, %.2f ms | %s |\n", be, r.Accounts,
			map[string]string{"SQLite": "≥ 20,000/s, < 10 ms", "PostgreSQL": "report"}[be], v, p, verdict)
	}
	return b.String()
}

func wanted(want float64, atMost bool) string {
	switch {
	case want == 0:
		return "ratio"
	case atMost:
		return fmt.Sprintf("≤ %.1f×", want)
	default:
		return fmt.Sprintf("≥ %.1f×", want)
	}
}

func (r *report) markdown(o opts) string {
	var b strings.Builder
	b.WriteString("# Benchmarks: traverse beside coturn\n\n")
	b.WriteString("Generated by `scripts/bench` (engine: `internal/benchtool`); do not edit by hand, run it again.\n\n")
	fmt.Fprintf(&b, "- **Command:** `%s`\n- **Date:** %s\n- **Machine:** %s\n- **Go:** %s; **coturn:** %s\n",
		r.Command, r.Date, r.Machine, r.Go, r.Coturn)
	fmt.Fprintf(&b, "- **Rounds:** %d, alternating which server goes first; each data run lasts %s. Cells are the median (min–max) over the rounds.\n",
		r.Rounds, r.Duration)
	fmt.Fprintf(&b, "- **Whole run:** %.0f s; load average (1 min) %.1f at the start, %.1f at the end; %.1f %% of the CPU time stolen by the hypervisor (other guests)\n\n",
		r.Seconds, r.LoadAvg[0], r.LoadAvg[1], r.StealPct)
	if o.pngOut != "" {
		fmt.Fprintf(&b, "![traverse/coturn ratios](%s)\n\n", filepath.Base(o.pngOut))
	}
	if r.Note != "" {
		fmt.Fprintf(&b, "**Note on this run.** %s\n\n", r.Note)
	}
	b.WriteString("## Against issue 14's targets (and issue 16's TCP/TLS rows)\n\n")
	b.WriteString(r.targets14(o))
	b.WriteString("\n## Against issue 6's targets\n\n")
	b.WriteString(r.targets())
	b.WriteString("\n## All figures\n\n")
	b.WriteString(r.table())
	if len(r.Failures) > 0 {
		b.WriteString("\nMeasurements that failed in this run:\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
	}
	b.WriteString(`
## How it is measured

- **Servers.** traverse (` + "`traverse serve`" + `, the built binary) and coturn (Debian's ` + "`turnserver`" + `) run side by side
  on 127.0.0.1 with equivalent settings: one TURN REST shared secret, loopback peers allowed, no per-user
  quota, 8,000 relay ports each (disjoint ranges), ` + fmt.Sprint(r.Threads) + ` relay threads (traverse ` + "`relay.udp_sockets`" + `,
  coturn ` + "`--relay-threads`" + `), no DTLS, no CLI. Both are laid out as shipped: UDP and TCP on one port, and a
  TLS listener on another with the same self-signed ECDSA certificate that the bench writes. The descriptor
  limit (RLIMIT_NOFILE) of the bench and the servers is ` + fmt.Sprint(r.NoFile) + ` (raised as far as the hard limit allows).
- **Peer.** The relayed messages go to a UDP echo peer on loopback: ours (` + "`benchtool echo`" + `, one thread like
  coturn's ` + "`turnutils_peer`" + `, but it reads up to 64 datagrams with one ` + "`recvmmsg`" + ` and echoes them with one
  ` + "`sendmmsg`" + `). ` + "`turnutils_peer`" + ` spends a ` + "`recvfrom`" + ` and a ` + "`sendto`" + ` per echo and at saturation takes close to one
  of the two cores, capping both servers alike: the row marked *turnutils_peer* keeps issue 6's original set-up
  to show it. The turnutils_uclient rows use turnutils_peer too.
- **Load.** A Go load generator (` + "`internal/benchtool`" + `) with 50 UDP clients, each with its own authenticated
  allocation, a permission and (for channels) a channel binding, made before the clock starts. Payloads carry a
  send timestamp; the peer echoes them back through the relay. *Paced* offers 10,000 messages/s in total (each
  echoed: ~100 two-way audio calls); *saturated* is a closed loop: every client keeps 8 messages in flight and sends
  as many as come back (a client that hears nothing for 100 ms refills its window), all from one goroutine
  polling every client socket with one epoll set and moving each client's datagrams with one ` + "`recvmmsg`" + ` and one
  ` + "`sendmmsg`" + `. The rate is what the server, the peer and the load generator reach together on the shared
  cores (as in issue 6); what the generator and the peer spent per message is in the table, so the server's share
  can be seen.
- **CPU per relayed message** is the server's utime+stime delta from ` + "`/proc/PID/stat`" + ` over the run divided by the
  messages it relayed in both directions (sent + echoed back); every relayed message is one read and one write.
  For the ping-pong, the peer's CPU per echo (one read, one write): the kernel's own cost per datagram here.
- **Go forwarder** is a trivial UDP forwarder (one reader goroutine, one connected upstream socket and goroutine
  per client) run as its own process with the same load, without TURN framing: the practical floor for Go.
- **turnutils_uclient** rows: coturn's own load generator (as issue 6 used), over channels to turnutils_peer, over
  UDP, TCP (` + "`-t`" + `) and TLS (` + "`-t -S`" + `). *Paced*: ` + fmt.Sprintf("%d clients × %d", o.ucClients, o.ucN) + ` 100-byte
  messages every 5 ms each (` + "`-m " + fmt.Sprint(o.ucClients) + " -c -z 5`" + `). *Saturated*: 4 uclient processes at once, each
  ` + "`-m 10 -z 0 -n " + fmt.Sprint(o.ucSatN) + "`" + `. Server CPU (every thread's run time) over the whole uclient runs, set-up
  included, per message relayed (sent + echoed); messages/s over the runs' wall time, set-up included.
- **Call mix:** ` + fmt.Sprint(o.callMix) + ` allocations (channels to our echo peer), each sending audio, one 160-byte datagram
  every 20 ms, and one in ten also video, a frame of 8 × 1,100-byte datagrams sent back to back 30 times a
  second, each flow at a random phase, for ` + r.Duration + `: from one goroutine stepping a 1 ms timing wheel (a frame
  is one ` + "`sendmmsg`" + `, stamped as it leaves), while one epoll loop counts the echoes. The **round trip** is the
  relay's share: from the send to the kernel's receive stamp of the echo (` + "`SO_TIMESTAMPNS`" + `), less the time the echo
  peer held the datagram (its own kernel stamp to its send, which it writes into the payload). So the wake-ups
  of the generator's receive loop and of the echo peer, on the same two cores, are left out; the round trip
  as the generator's loop saw it, wake-ups included, is the row after it. 1,000 allocations offer about
  74,000 datagrams/s each way (148,000 relayed messages/s), more than coturn relays on this machine at
  saturation; the smaller run is a load both carry.
- **Scale:** a freshly started server of each kind in turn (relay range ` + fmt.Sprintf("%d–%d", o.scalePorts[0], o.scalePorts[1]) + `, checked to hold
  the top step) is brought to ` + fmt.Sprint(scaleSteps) + ` live allocations, each step's allocations kept for the next;
  at each step every allocation sends a 100-byte datagram every 500 ms for ` + o.scaleDur.String() + ` (through the same
  generator), and **RSS per allocation** is (VmRSS now − VmRSS of the fresh server) / allocations.
- **Allocations/s:** one event loop (epoll, non-blocking sockets, hand-built messages in reused buffers) keeps
  a fixed number of allocations in flight. Every allocation has its own UDP socket (its own 5-tuple) and its own TURN REST
  credential, both made before the clock starts — socket creation and minting are the client's and the app's
  cost, not the server's — and inside the clock does the whole exchange: unsigned Allocate, the server's 401
  with REALM and NONCE, the long-term key, the signed Allocate (MESSAGE-INTEGRITY, FINGERPRINT), and a success
  carrying XOR-RELAYED-ADDRESS. The load generator shares the 2 cores with the server, so it is kept cheap
  (its CPU per allocation is in the table; the old one, a goroutine per allocation opening its Go socket inside
  the clock, cost 125–160 µs per allocation — more than traverse's server side — and pulled every ratio towards 1).
  Each round first makes a warm-up pass of ` + fmt.Sprint(o.allocN) + ` allocations (16 in flight), held while
  **memory per allocation** is read (the VmRSS delta, ` + "`/proc/PID/status`" + `, divided by their number) and then
  released (Refresh 0). Then, each time once the server is idle and holds no more sockets than before (coturn keeps
  a released client's session socket for about a second), it makes timed passes of ` + fmt.Sprint(o.allocN) + ` allocations
  (or 10 s) on new sockets with ` + fmt.Sprint(allocLevels) + ` in flight, raising the load until the server makes errors
  (issue 6: "allocations/s until errors"); each server's rate is its best pass, and every pass is in the table.
  The timed passes are the steady state of a server that has run for a while; the warm-up pass of the
  first round is the *freshly started* row, where both servers also pay for memory they touch for the first
  time (coturn ~2.5–3× its steady CPU per allocation, traverse ~1.8×). **Server CPU per allocation** is every
  server thread's run time (` + "`/proc/PID/task/*/schedstat`" + `, ns) over the best pass divided by its allocations.
  Only the first round counts for memory: later rounds reuse what it grew (coturn's malloc keeps freed memory).
- **STUN Binding:** 4 sockets with 16 requests in flight each.
- **Issuer:** issuer-only servers (no relay, plain HTTP), one on SQLite and one on PostgreSQL (a throwaway
  local cluster, ` + "`internal/pgtest`" + `), each with ` + fmt.Sprint(r.Accounts) + ` accounts in its store. ` + "`wrk -t1 -c16 --latency`" + ` (one thread: a second
  would take a core from the server it measures) POSTs
  ` + "`Ttl=3600`" + ` to ` + "`/2010-04-01/Accounts/{Sid}/Tokens.json`" + `, each request as the next account in turn (Basic auth).
`)
	return b.String()
}

// chart draws the traverse/coturn ratios with gnuplot.
func (r *report) chart(path string) error {
	var data bytes.Buffer
	for _, rw := range r.Rows {
		if rw.Ratio == 0 || rw.Short == "" {
			continue
		}
		// Normalise so that below 1 is always better for traverse.
		v := rw.Ratio
		label := rw.Short
		if rw.Higher {
			v = 1 / v
			label += " (inv.)"
		}
		fmt.Fprintf(&data, "%q %.4f\n", label, v)
	}
	dir, err := os.MkdirTemp("", "bench-chart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dat := filepath.Join(dir, "ratios.dat")
	if err := os.WriteFile(dat, data.Bytes(), 0o644); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1800,700 font "sans,10"
set output %q
set title "traverse / coturn (median of %d rounds, %s) — below 1 is better for traverse"
set style fill solid 0.7
set boxwidth 0.7
set yrange [0:*]
set grid ytics
set xtics rotate by -40 left
set bmargin 9
set rmargin 12
unset key
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "red"
plot %q using 0:2:xtic(1) with boxes lc rgb "#3a6ea5", '' using 0:2:(sprintf("%%.2f", $2)) with labels offset 0,0.7
`, abs, r.Rounds, r.Date, dat)
	sp := filepath.Join(dir, "chart.gp")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "gnuplot", sp).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w\n%s", err, out)
	}
	return nil
}

// loadAvg is the 1-minute load average, 0 when unknown.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	_, _ = fmt.Sscan(string(b), &v)
	return v
}

// machineTicks is the first line of /proc/stat: all CPUs' time in ticks, and
// the part of it stolen by the hypervisor.
type machineTicks struct{ total, steal uint64 }

func readMachineTicks() machineTicks {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var t machineTicks
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		t.total += v
		if i == 8 {
			t.steal = v
		}
	}
	return t
}

// stealPct is the stolen share of the CPU time since start, 0 when unknown.
func (t machineTicks) stealPct(start machineTicks) float64 {
	if t.total <= start.total {
		return 0
	}
	return 100 * float64(t.steal-start.steal) / float64(t.total-start.total)
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(line[strings.IndexByte(line, ':')+1:])
				break
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d cores, Linux %s", model, runtime.NumCPU(), kernel)
}

func coturnVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "coturn").Output()
	if len(out) == 0 {
		return "unknown"
	}
	return "Debian coturn " + string(out)
}
