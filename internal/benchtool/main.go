// Command benchtool is scripts/bench's engine: it starts traverse, coturn, a
// trivial Go UDP forwarder and a UDP echo peer on loopback, drives them with
// the same load generators round by round (alternating which server goes
// first), and writes the medians as JSON, a markdown table and a PNG chart.
//
// It is not part of the product; see docs/benchmarks.md for what it measures.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/traverse/traverse/internal/pgtest"
)

// opts is the run's shape, set by the flags and --quick.
type opts struct {
	traverse      string
	secret        string
	threads       int
	traversePorts [2]int
	coturnPorts   [2]int
	scalePorts    [2]int // both servers' in the scale run, one at a time

	quick      bool
	rounds     int
	dur        time.Duration
	allocN     int
	bindingDur time.Duration
	issuerDur  time.Duration
	ucClients  int
	ucN        int
	ucSatN     int   // messages per client of the saturated uclient runs
	accounts   int   // accounts in the issuer's store
	callMix    []int // allocations of the call mix runs; the last is issue 14's
	scaleDur   time.Duration
	nofile     uint64 // RLIMIT_NOFILE of the bench and its servers

	jsonOut, mdOut, pngOut string
	command                string
	note                   string
	parts                  map[string]bool // --only; empty means all
	// profile is --profile's directory: each scenario's traverse writes its
	// CPU profile there (profile.go); "" profiles nothing.
	profile  string
	profiles *profileLog // the profiles written
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "echo" {
		log.Fatal(echo())
	}
	if len(os.Args) == 3 && os.Args[1] == "forward" {
		if err := forward(os.Args[2]); err != nil {
			log.Fatal(err)
		}
		return
	}
	var o opts
	flag.StringVar(&o.traverse, "traverse", "", "path of the traverse binary")
	flag.BoolVar(&o.quick, "quick", false, "one short round (CI): about 2 minutes")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds (default 3, 1 with --quick)")
	flag.IntVar(&o.threads, "threads", 2, "relay threads for both servers (traverse relay.udp_sockets, coturn --relay-threads)")
	flag.StringVar(&o.jsonOut, "json", "", "write results as JSON here")
	flag.StringVar(&o.mdOut, "md", "", "write the markdown report here")
	flag.StringVar(&o.pngOut, "png", "", "write the ratio chart here (needs gnuplot)")
	flag.StringVar(&o.command, "command", "scripts/bench", "the command line shown in the report")
	flag.StringVar(&o.note, "note", "", "a remark on the run for the report (the machine's load, say)")
	only := flag.String("only", "", "comma-separated parts to run (data, uclient, callmix, scale, alloc, binding, issuer); default all")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of traverse per scenario and round into this directory, and their tops to summary.txt there")
	seconds := flag.Float64("seconds", 0, "length of each data, call-mix and issuer run in seconds (default 4, 5 for the issuer; 1.5, 2 with --quick): longer runs give --profile more samples")
	ucMessages := flag.Int("uclient-messages", 0, "messages per turnutils_uclient client, paced and saturated (default 400 and 2000; 100 and 200 with --quick)")
	accounts := flag.Int("accounts", 0, "accounts in the issuer's store (default 10000, 2000 with --quick)")
	steps := flag.String("scale-steps", "", "comma-separated live allocations of the scale run's steps (default 100,1000,10000): a short look at one step")
	callMix := flag.String("call-mix", "", "comma-separated allocations of the call mix runs (default 250,1000; 100 with --quick): an A/B of one step")
	flag.Parse()
	if *steps != "" {
		scaleSteps = risingCounts("--scale-steps", *steps)
	}
	o.parts = map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if !knownParts[p] {
				log.Fatalf("benchtool: unknown part %q in --only", p)
			}
			o.parts[p] = true
		}
	}
	if o.traverse == "" {
		log.Fatal("benchtool: --traverse is required")
	}
	if o.profile != "" {
		// The servers write there, from the directories they run in.
		abs, err := filepath.Abs(o.profile)
		if err != nil {
			log.Fatalf("benchtool: --profile: %v", err)
		}
		o.profile = abs
	}
	o.profiles = &profileLog{}
	o.secret = "bench-secret-0123456789abcdef"
	// Below Linux's ephemeral ports (32768-60999): the load generator's
	// thousands of client sockets take those, and a relay range there would
	// share its ports with them.
	o.traversePorts = [2]int{16000, 23999}
	o.coturnPorts = [2]int{24000, 31999}
	o.scalePorts = [2]int{4000, 15999}
	if n := o.scalePorts[1] - o.scalePorts[0] + 1; n < scaleSteps[len(scaleSteps)-1] {
		log.Fatalf("benchtool: the scale run's relay range holds %d ports, fewer than its %d allocations", n, scaleSteps[len(scaleSteps)-1])
	}
	// Each allocation of the scale run is a socket here and one or two in
	// the server under test, which inherits this limit.
	nofile, err := raiseNoFile(1 << 16)
	if err != nil {
		log.Fatalf("benchtool: %v", err)
	}
	o.nofile = nofile
	log.Printf("RLIMIT_NOFILE %d for the bench and the servers", nofile)
	if o.quick {
		o.dur, o.allocN, o.bindingDur, o.issuerDur, o.ucClients, o.ucN = 1500*time.Millisecond, 2000, time.Second, 2*time.Second, 10, 100
		o.ucSatN, o.accounts = 200, 2000
		o.callMix, o.scaleDur = []int{100}, time.Second
		if o.rounds == 0 {
			o.rounds = 1
		}
	} else {
		o.dur, o.allocN, o.bindingDur, o.issuerDur, o.ucClients, o.ucN = 4*time.Second, 5000, 3*time.Second, 5*time.Second, 50, 400
		o.ucSatN, o.accounts = 2000, 10000
		// 1,000 is issue 14's; on a shared 2-core machine its 74k
		// datagrams/s each way overload coturn (and the generator), so a
		// quarter of it is measured too, a load both carry.
		o.callMix, o.scaleDur = []int{250, 1000}, 4*time.Second
		if o.rounds == 0 {
			o.rounds = 3
		}
	}
	if *callMix != "" {
		o.callMix = risingCounts("--call-mix", *callMix)
	}
	if *accounts > 0 {
		o.accounts = *accounts
	}
	if *seconds > 0 {
		o.dur = time.Duration(*seconds * float64(time.Second))
		o.issuerDur = max(o.dur, time.Second) // wrk counts whole seconds
	}
	if *ucMessages > 0 {
		o.ucN, o.ucSatN = *ucMessages, *ucMessages
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A hard bound on the whole run, whatever happens.
	limit := 40 * time.Minute
	if o.quick {
		limit = 6 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := run(ctx, o); err != nil {
		log.Fatalf("benchtool: %v", err)
	}
}

// env is everything started for the run.
type env struct {
	dir       string
	cert, key string // the TLS listeners' certificate
	trav      *traverseServer
	coturn    *coturnServer
	peer      *proc // turnutils_peer, for turnutils_uclient
	peerAddr  netip.AddrPort
	echo      *proc // our batched echo peer, for our own generator
	echoAddr  netip.AddrPort
	fwd       *proc
	fwdAddr   netip.AddrPort
	issuers   []*issuerEnv // SQLite, PostgreSQL
	pg        *pgtest.Cluster
}

func (e *env) stop() {
	for _, p := range []*proc{e.fwd, e.peer, e.echo} {
		if p != nil {
			p.stop()
		}
	}
	if e.coturn != nil {
		e.coturn.stop()
	}
	if e.trav != nil {
		e.trav.stop()
	}
	for _, i := range e.issuers {
		i.srv.stop()
	}
	if e.pg != nil {
		if err := e.pg.Stop(); err != nil {
			log.Print(err)
		}
	}
}

func run(ctx context.Context, o opts) (err error) {
	dir, err := os.MkdirTemp("", "traverse-bench-")
	if err != nil {
		return err
	}
	e := &env{dir: dir}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	defer func() {
		e.stop()
		if err == nil {
			_ = os.RemoveAll(dir)
		} else {
			log.Printf("logs kept in %s", dir)
		}
	}()
	if e.peer, e.peerAddr, err = startPeer(); err != nil {
		return err
	}
	if e.echo, e.echoAddr, err = startEcho(); err != nil {
		return err
	}
	if e.cert, e.key, err = selfSignedCert(dir); err != nil {
		return err
	}
	if e.trav, err = startTraverse(ctx, o.traverse, filepath.Join(dir, "traverse"), o,
		travSetup{relay: true, ports: o.traversePorts, cert: e.cert, key: e.key}); err != nil {
		return err
	}
	if e.coturn, err = startCoturn(filepath.Join(dir, "coturn"), o, o.coturnPorts, e.cert, e.key); err != nil {
		return err
	}
	if e.fwd, e.fwdAddr, err = startForwarder(e.echoAddr); err != nil {
		return err
	}
	if o.runs("issuer") {
		if err := e.startIssuers(ctx, o); err != nil {
			return err
		}
	}
	trav := target{name: "traverse", kind: "turn", addr: e.trav.udp, tls: e.trav.tls, server: e.trav.proc}
	cot := target{name: "coturn", kind: "turn", addr: e.coturn.udp, tls: e.coturn.tls, server: e.coturn.proc}
	fwd := target{name: "forwarder", kind: "raw", addr: e.fwdAddr, server: e.fwd}
	pp := target{name: "ping-pong", kind: "raw", addr: e.echoAddr, server: e.echo}
	log.Printf("traverse %s (pid %d), coturn %s (pid %d), forwarder %s (pid %d), echo peer %s (pid %d), turnutils_peer %s (pid %d)",
		trav.addr, trav.server.pid(), cot.addr, cot.server.pid(), fwd.addr, fwd.server.pid(), pp.addr, pp.server.pid(),
		e.peerAddr, e.peer.pid())

	specs := dataSpecs(o)
	rep := newReport(o)
	began := time.Now()
	for round := 0; round < o.rounds; round++ {
		pair := []target{trav, cot}
		if round%2 == 1 {
			pair = []target{cot, trav}
		}
		log.Printf("round %d/%d: %s first", round+1, o.rounds, pair[0].name)
		for _, p := range []*proc{e.trav.proc, e.coturn.proc, e.fwd, e.peer, e.echo} {
			if o.profile != "" && p == e.trav.proc {
				continue // stopped: each scenario has its own (profile.go)
			}
			select {
			case <-p.done:
				return fmt.Errorf("%s (pid %d) exited during the run", p.name, p.pid())
			default:
			}
		}
		for _, spec := range specs {
			if !o.runs("data") {
				break
			}
			targets := pair
			peer, peerAddr := e.echo, e.echoAddr
			if spec.cPeer {
				peer, peerAddr = e.peer, e.peerAddr
			} else if spec.mode == "channel" {
				targets = append(append([]target{}, pair...), fwd, pp)
			}
			for _, t := range targets {
				if err := ctx.Err(); err != nil {
					return err
				}
				t, done, err := e.profiledTarget(ctx, o, t, spec.profileName(), round)
				if err != nil {
					return err
				}
				r, err := runData(t, o, peer, peerAddr, spec)
				done()
				if err != nil {
					rep.failed(t.name, spec.String(), err)
					continue
				}
				log.Printf("  %-9s %-32s cpu %6.2f µs/msg  loss %5.2f%%  %8.0f msg/s  rtt p50 %6.0f µs p99 %6.0f µs",
					t.name, spec, r.CPUMicros, r.LossPct, r.MsgPerSec, r.P50Micros, r.P99Micros)
				rep.addData(spec, t.name, r)
			}
		}
		for _, spec := range ucSpecs(o) {
			if !o.runs("uclient") {
				break
			}
			// uclient spends seconds in set-up and a closing wait whatever
			// it sends: --quick runs both servers' at once to stay short
			// (each server's CPU is still its own; the ratios mean less).
			res := make([]uclientResult, len(pair))
			errs := make([]error, len(pair))
			var wg sync.WaitGroup
			for i, t := range pair {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t, done, err := e.profiledTarget(ctx, o, t, spec.profileName(), round)
					if err != nil {
						errs[i] = err
						return
					}
					res[i], errs[i] = runUclient(ctx, t, o, e.peerAddr, spec)
					done()
				}()
				if !o.quick {
					wg.Wait()
				}
			}
			wg.Wait()
			for i, t := range pair {
				if errs[i] != nil {
					rep.failed(t.name, spec.String(), errs[i])
					continue
				}
				r := res[i]
				log.Printf("  %-9s %-45s cpu %6.2f µs/msg  loss %5.2f%%  %8.0f msg/s", t.name, spec, r.CPUMicros, r.LossPct, r.MsgPerSec)
				rep.addUclient(spec, t.name, r)
			}
		}
		for _, n := range o.callMix {
			for _, t := range pair {
				if !o.runs("callmix") {
					break
				}
				t, done, err := e.profiledTarget(ctx, o, t, fmt.Sprintf("callmix %d", n), round)
				if err != nil {
					return err
				}
				r, err := runCallMix(t, o, e.echoAddr, n, o.dur)
				done()
				if err != nil {
					rep.failed(t.name, "call mix", err)
					continue
				}
				log.Printf("  %-9s call mix, %d allocations: cpu %6.2f µs/msg  loss %5.2f%%  rtt p50 %6.0f µs p99 %6.0f µs (as the generator saw it %6.0f / %6.0f)  (%d sent)",
					t.name, n, r.CPUMicros, r.LossPct, r.P50Micros, r.P99Micros, r.SeenP50Micros, r.SeenP99Micros, r.Sent)
				rep.addCallMix(n, t.name, r)
			}
		}
		for _, t := range pair {
			if !o.runs("scale") {
				break
			}
			profile := ""
			if t.name == "traverse" {
				profile = o.profilePath("scale", round)
			}
			steps, err := runScale(ctx, t.name, o, dir, e.cert, e.key, e.echoAddr, scaleSteps, o.scaleDur, profile)

			if err != nil {
				rep.failed(t.name, "scale", err)
			}
			rep.addScale(t.name, steps)
		}
		for _, t := range pair {
			if !o.runs("alloc") {
				break
			}
			t, done, err := e.profiledTarget(ctx, o, t, "alloc", round)
			if err != nil {
				return err
			}
			r, err := runAlloc(t, o, o.allocN, allocLevels, 10*time.Second)
			done()
			if err != nil {
				rep.failed(t.name, "allocations", err)
				continue
			}
			log.Printf("  %-9s allocations: warm-up pass %.0f/s, %.1f KB RSS each; %d errors %s",
				t.name, r.ColdPerSec, r.RSSPerAllocK, r.Errors, r.FirstError)
			for _, p := range r.Levels {
				log.Printf("  %-9s   %2d in flight: %d ok, %d errors, %.0f/s, server %.1f µs CPU each, load generator %.1f µs",
					t.name, p.InFlight, p.Allocations, p.Errors, p.PerSec, p.ServerCPUMicros, p.ClientCPUMicros)
			}
			rep.addAlloc(t.name, r, round == 0)
		}
		for _, t := range pair {
			if !o.runs("binding") {
				break
			}
			t, done, err := e.profiledTarget(ctx, o, t, "binding", round)
			if err != nil {
				return err
			}
			r, err := runBinding(t, o.bindingDur)
			done()
			if err != nil {
				rep.failed(t.name, "STUN Binding", err)
				continue
			}
			log.Printf("  %-9s STUN Binding: %.0f/s", t.name, r)
			rep.add("STUN Binding requests/s", "binding", "/s", true, t.name, r)
		}
		for _, is := range e.issuers {
			if err := is.profiled(ctx, o, round); err != nil {
				return err
			}
			ir, err := runIssuer(ctx, is, dir, o.issuerDur)
			if o.profile != "" {
				// Flushes the profile; the next round starts another.
				o.profiles.stopProfiled(is.srv.proc, o.profilePath("issuer "+is.backend, round))
			}
			if err != nil {
				rep.failed("traverse", "issuer "+is.backend, err)
				continue
			}
			log.Printf("  issuer on %s, %d accounts: %.0f Tokens/s, p50 %.2f ms, p99 %.2f ms, non-2xx %d, socket errors %d",
				is.backend, o.accounts, ir.PerSec, ir.P50Millis, ir.P99Millis, ir.Non2xx, ir.Errors)
			rep.addIssuer(is.backend, o.accounts, ir)
		}
	}
	rep.Seconds = time.Since(began).Seconds()
	rep.finish()
	log.Printf("done in %s", time.Since(began).Round(time.Second))
	if o.profile != "" {
		if err := writeProfileSummary(ctx, o); err != nil {
			return err
		}
	}
	return rep.write(o)
}

// startIssuers starts the issuer-only servers, on SQLite and on a
// throwaway PostgreSQL cluster, each with o.accounts accounts in its store.
func (e *env) startIssuers(ctx context.Context, o opts) error {
	start := time.Now()
	is, err := startIssuer(ctx, o.traverse, filepath.Join(e.dir, "issuer-sqlite"), o, nil, o.accounts)
	if err != nil {
		return fmt.Errorf("issuer on SQLite: %w", err)
	}
	e.issuers = append(e.issuers, is)
	if e.pg, err = pgtest.New(); err != nil {
		return err
	}
	ip, err := startIssuer(ctx, o.traverse, filepath.Join(e.dir, "issuer-postgres"), o, e.pg, o.accounts)
	if err != nil {
		return fmt.Errorf("issuer on PostgreSQL: %w", err)
	}
	e.issuers = append(e.issuers, ip)
	log.Printf("issuers on SQLite (pid %d) and PostgreSQL (pid %d), %d accounts each, ready in %s",
		is.srv.pid(), ip.srv.pid(), o.accounts, time.Since(start).Round(time.Millisecond))
	return nil
}

// risingCounts parses a flag's comma-separated rising positive counts.
func risingCounts(name, v string) []int {
	var counts []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(counts) > 0 && n <= counts[len(counts)-1]) {
			log.Fatalf("benchtool: %s wants rising positive counts, got %q", name, v)
		}
		counts = append(counts, n)
	}
	return counts
}

// knownParts are the measurements --only can pick.
var knownParts = map[string]bool{"data": true, "uclient": true, "callmix": true, "scale": true,
	"alloc": true, "binding": true, "issuer": true}

// runs reports whether a part of the run is selected (all are by default).
func (o opts) runs(part string) bool { return len(o.parts) == 0 || o.parts[part] }

// failed logs a measurement that could not be taken; the run goes on
// (machines are noisy, and CI must complete), the report lacks that sample,
// and the server processes are checked at the next step.
func (r *report) failed(tgt, what string, err error) {
	log.Printf("  %-9s %s: FAILED: %v", tgt, what, err)
	r.Failures = append(r.Failures, fmt.Sprintf("%s, %s: %v", tgt, what, err))
}

// dataSpecs is the matrix of relayed-data scenarios.
func dataSpecs(o opts) []dataSpec {
	var specs []dataSpec
	for _, rate := range []int{10000, 0} {
		for _, size := range []int{100, 1000} {
			for _, mode := range []string{"channel", "send"} {
				specs = append(specs, dataSpec{mode: mode, size: size, rate: rate, clients: 50, dur: o.dur})
			}
		}
	}
	if !o.quick {
		// Issue 6's set-up, for comparison: its peer, one recvfrom and one
		// sendto per echo, takes close to a core here and caps both servers.
		specs = append(specs, dataSpec{mode: "channel", size: 100, clients: 50, dur: o.dur, cPeer: true})
	}
	return specs
}
