package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/sys/unix"
)

// target is what a load is aimed at: a TURN server, the forwarder, or the
// echo peer itself (the ping-pong).
type target struct {
	name   string
	kind   string         // "turn", "raw"
	addr   netip.AddrPort // UDP, and plain TCP on the same port
	tls    netip.AddrPort // TURN over TLS
	server *proc          // whose CPU is measured
}

// dataSpec is one relayed-data scenario.
type dataSpec struct {
	mode string // "channel" or "send" (TURN only)
	// cPeer echoes through coturn's turnutils_peer instead of our batched
	// echo peer: issue 6's original set-up, kept for comparison.
	cPeer   bool
	size    int // payload bytes
	rate    int // messages/s offered in total; 0 saturates
	clients int
	first   int // number of the first client (its user name and channel)
	dur     time.Duration
}

func (d dataSpec) String() string {
	load := fmt.Sprintf("paced %dk msg/s", d.rate/1000)
	if d.rate == 0 {
		load = "saturated"
	}
	if d.cPeer {
		return fmt.Sprintf("%s, %d B, %s, turnutils_peer", load, d.size, d.mode)
	}
	return fmt.Sprintf("%s, %d B, %s", load, d.size, d.mode)
}

// dataResult is what one run of a dataSpec against one target measured.
type dataResult struct {
	Sent, Received int64
	LossPct        float64
	MsgPerSec      float64 // messages relayed per second (both directions)
	CPUMicros      float64 // server CPU per relayed message
	// LoadCPUMicros is what the load generator and the echo peer spent per
	// relayed message: they share the cores with the server.
	LoadCPUMicros float64
	P50Micros     float64 // round trip
	P99Micros     float64
}

type dataClient struct {
	conn          *net.UDPConn
	f             framer
	pkt, payload  []byte
	sent          int64
	received      atomic.Int64
	rtts          []int64
	tc            *turnClient
	seq           uint32
	rttSampleMask uint32
}

// setupClients opens n clients to t; for TURN each allocates, permits peer
// and, for channels, binds one.
func setupClients(t target, o opts, peer netip.AddrPort, spec dataSpec) ([]*dataClient, error) {
	clients := make([]*dataClient, spec.clients)
	errs := make(chan error, spec.clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, min(16+len(clients)/100, 64))
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			dc := &dataClient{}
			var err error
			if t.kind == "raw" {
				dc.conn, err = dialUDP(t.addr)
				dc.f = rawFramer{}
			} else {
				var tc *turnClient
				if tc, err = allocateTURN(t.addr, o.secret, fmt.Sprintf("load%d", spec.first+i)); err == nil {
					dc.tc, dc.conn = tc, tc.conn
					err = setupTURN(tc, spec.first+i, peer, spec.mode, dc)
				}
			}
			if err != nil {
				if dc.conn != nil {
					_ = dc.conn.Close()
				}
				errs <- err
				return
			}
			dc.pkt, dc.payload = dc.f.frame(spec.size)
			clients[i] = dc
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeClients(clients)
		return nil, fmt.Errorf("%s: set up clients: %w", t.name, err)
	}
	return clients, nil
}

func setupTURN(tc *turnClient, i int, peer netip.AddrPort, mode string, dc *dataClient) error {
	if err := tc.permit(peer); err != nil {
		return err
	}
	if mode == "send" {
		dc.f = sendFramer{peer}
		return nil
	}
	ch := uint16(0x4000 + i%0x3000)
	if err := tc.bindChannel(ch, peer); err != nil {
		return err
	}
	dc.f = channelFramer{ch}
	return nil
}

func closeClients(clients []*dataClient) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(c *dataClient) {
			defer wg.Done()
			defer func() { <-sem }()
			if c.tc != nil {
				_ = c.tc.release()
			}
			_ = c.conn.Close()
		}(c)
	}
	wg.Wait()
}

// runData offers spec's load to t through peer and measures it.
func runData(t target, o opts, peer *proc, peerAddr netip.AddrPort, spec dataSpec) (dataResult, error) {
	clients, err := setupClients(t, o, peerAddr, spec)
	if err != nil {
		return dataResult{}, err
	}
	defer closeClients(clients)

	if spec.rate == 0 {
		for _, c := range clients {
			c.rttSampleMask = 15 // RTTs sampled 1 in 16
		}
	}
	epoch := time.Now()
	cpu0, _ := cpuTicks(t.server.pid())
	peer0, _ := cpuTicks(peer.pid())
	self0 := selfCPU()
	start := time.Now()
	end := start.Add(spec.dur)
	var elapsed time.Duration
	if spec.rate == 0 {
		// Saturation: a closed loop, 8 messages in flight per client (see
		// saturate), then the tail is let in.
		if err := saturate(clients, 8, epoch, end, end.Add(300*time.Millisecond)); err != nil {
			return dataResult{}, err
		}
		elapsed = spec.dur
	} else {
		elapsed = pace(clients, spec.rate, epoch, start, end)
	}
	cpu1, _ := cpuTicks(t.server.pid())
	peer1, _ := cpuTicks(peer.pid())
	self1 := selfCPU()

	var r dataResult
	var rtts []int64
	for _, c := range clients {
		r.Sent += c.sent
		r.Received += c.received.Load()
		rtts = append(rtts, c.rtts...)
	}
	if r.Sent > 0 {
		r.LossPct = 100 * float64(r.Sent-r.Received) / float64(r.Sent)
	}
	// Every message the server forwards is read once and sent once: for a
	// relay that is sent+received messages; for the echo peer one echo.
	handled := r.Sent + r.Received
	if t.kind == "raw" && t.name == "ping-pong" {
		handled = r.Received
	}
	r.MsgPerSec = float64(handled) / elapsed.Seconds()
	if handled > 0 {
		r.CPUMicros = float64(cpu1-cpu0) * tickSeconds * 1e6 / float64(handled)
		load := float64(self1-self0) / 1e3
		if t.server != peer { // the ping-pong's server is the peer
			load += float64(peer1-peer0) * tickSeconds * 1e6
		}
		r.LoadCPUMicros = load / float64(handled)
	}
	r.P50Micros, r.P99Micros = percentilesMicros(rtts)
	return r, nil
}

// allocResult is the allocation-rate and memory run.
type allocResult struct {
	// Allocations, PerSec and the CPU figures are those of the timed pass
	// with the highest rate (Levels has every pass).
	Allocations  int64
	Errors       int64
	PerSec       float64
	InFlight     int
	RSSPerAllocK float64 // KB of resident memory per held allocation
	// ServerCPUMicros is the server's CPU per allocation over the clock
	// (every thread's run time, /proc/PID/task/*/schedstat); ClientCPUMicros
	// is the load generator's own (getrusage), which shares the cores.
	ServerCPUMicros float64
	ClientCPUMicros float64
	// ColdPerSec is the warm-up pass's rate: in the first round, that of a
	// freshly started server.
	ColdPerSec float64
	Levels     []allocPass
	FirstError string `json:",omitempty"`
}

// allocPass is one timed pass of the allocation run.
type allocPass struct {
	InFlight        int
	Allocations     int64
	Errors          int64
	PerSec          float64
	ServerCPUMicros float64
	ClientCPUMicros float64
}

// allocLevels are the allocations kept in flight by the timed passes, one
// pass each: the load is raised until the server makes errors or the levels
// run out, and the best rate is the server's (issue 6: "allocations/s until
// errors"). Each server gets its own peak, whichever level that is.
var allocLevels = []int{16, 32, 64}

// runAlloc measures authenticated allocations: n of them per pass, for at
// most limit each pass. A first pass (16 in flight) allocates n, holds them
// while reading the server's RSS (memory per allocation) and releases them;
// it also brings the server to the steady state of a server that has run for
// a while (heap and kernel memory grown once, then reused), which the first
// round of a fresh process is not: cold, coturn spends 2.5-3x the CPU per
// allocation it spends warm and traverse ~1.8x, so a cold figure measures
// first-touch memory and varies with what ran before (its rate is kept as
// ColdPerSec). A timed pass per level of allocLevels then allocates n more
// on new sockets and releases them. The sockets and credentials of each pass
// are made before its clock starts (see allocGen); inside it, each allocation
// is the whole 401 challenge and the signed Allocate on its own 5-tuple.
func runAlloc(t target, o opts, n int, levels []int, limit time.Duration) (allocResult, error) {
	var r allocResult
	rss0, err := rssKB(t.server.pid())
	if err != nil {
		return r, err
	}
	fds0 := countFDs(t.server.pid())
	warm, err := newAllocGen(t.addr, o.secret, n, levels[0])
	if err != nil {
		return r, err
	}
	// A pass's sockets are closed only once the server has let go of their
	// 5-tuples (waitSettled): coturn keeps a released one for a while and
	// answers 437 to a new socket that reuses its port.
	defer warm.close()
	warmStart := time.Now()
	warm.allocate(warmStart.Add(limit), 10)
	if warm.ok > 0 {
		r.ColdPerSec = float64(warm.ok) / time.Since(warmStart).Seconds()
	}
	time.Sleep(500 * time.Millisecond)
	rss1, err := rssKB(t.server.pid())
	if err != nil {
		return r, err
	}
	if warm.ok > 0 {
		r.RSSPerAllocK = float64(rss1-rss0) / float64(warm.ok)
	}
	warm.release()
	// Start the clock from the state the warm-up pass started from: coturn
	// keeps each released client's session socket for a few seconds, and a
	// pass timed among a thousand of them measures the leftovers of the last.
	waitSettled(t.server.pid(), fds0, 20*time.Second)
	r.Errors = warm.bad
	gens := []*allocGen{warm}
	warm.closeSockets()

	for _, conc := range levels {
		g, err := newAllocGen(t.addr, o.secret, n, conc)
		if err != nil {
			return r, err
		}
		defer g.close()
		gens = append(gens, g)
		cpu0, _ := threadsCPU(t.server.pid())
		self0 := selfCPU()
		start := time.Now()
		g.allocate(start.Add(limit), 10)
		elapsed := time.Since(start)
		self1 := selfCPU()
		cpu1, _ := threadsCPU(t.server.pid())
		g.release()
		// And leave the server as it was found, for the next pass.
		waitSettled(t.server.pid(), fds0, 20*time.Second)
		g.closeSockets()

		p := allocPass{InFlight: conc, Allocations: g.ok, Errors: g.bad, PerSec: float64(g.ok) / elapsed.Seconds()}
		if g.ok > 0 {
			p.ServerCPUMicros = float64(cpu1-cpu0) / 1e3 / float64(g.ok)
			p.ClientCPUMicros = float64(self1-self0) / 1e3 / float64(g.ok)
		}
		r.Levels = append(r.Levels, p)
		r.Errors += g.bad
		if p.PerSec > r.PerSec {
			r.Allocations, r.PerSec, r.InFlight = p.Allocations, p.PerSec, p.InFlight
			r.ServerCPUMicros, r.ClientCPUMicros = p.ServerCPUMicros, p.ClientCPUMicros
		}
		if g.bad > 0 {
			break // the load that makes errors is as far as it goes
		}
	}
	for _, p := range gens {
		if p.first != "" && r.FirstError == "" {
			r.FirstError = fmt.Sprintf("%s (%d kinds of error)", p.first, len(p.errs))
		}
	}
	return r, nil
}

// waitSettled waits until pid holds no more than fds descriptors (plus a
// few) and has used less than 2 % of a core over the last 100 ms, or limit
// passes.
func waitSettled(pid, fds int, limit time.Duration) {
	start := time.Now()
	prev, err := threadsCPU(pid)
	for err == nil && time.Since(start) < limit {
		time.Sleep(100 * time.Millisecond)
		var cur int64
		if cur, err = threadsCPU(pid); err == nil && cur-prev < int64(2*time.Millisecond) && countFDs(pid) <= fds+8 {
			break
		}
		prev = cur
	}
}

// countFDs is the number of open descriptors of pid (sockets, mostly).
func countFDs(pid int) int {
	e, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e)
}

// threadsCPU is the CPU time, in ns, that pid's live threads have run
// (the first field of each /proc/PID/task/TID/schedstat): finer than
// /proc/PID/stat's 10 ms ticks, which a one-second run needs.
func threadsCPU(pid int) (int64, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, tk := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, tk.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		v, _ := strconv.ParseInt(f[0], 10, 64)
		sum += v
	}
	return sum, nil
}

// selfCPU is this process's user+system CPU time in ns.
func selfCPU() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// runBinding measures STUN Binding requests answered per second: 4 sockets,
// 16 requests in flight on each, for dur.
func runBinding(t target, dur time.Duration) (float64, error) {
	var answered atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	start := time.Now()
	end := start.Add(dur)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialUDP(t.addr)
			if err != nil {
				once.Do(func() { firstErr = err })
				return
			}
			defer c.Close()
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			buf := make([]byte, 1500)
			for i := 0; i < 16; i++ {
				_, _ = c.Write(req.Raw)
			}
			for time.Now().Before(end) {
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := c.Read(buf)
				if err != nil {
					// Lost ones: refill the window.
					for i := 0; i < 16; i++ {
						_, _ = c.Write(req.Raw)
					}
					continue
				}
				if stun.IsMessage(buf[:n]) {
					answered.Add(1)
				}
				_, _ = c.Write(req.Raw)
			}
		}()
	}
	wg.Wait()
	return float64(answered.Load()) / time.Since(start).Seconds(), firstErr
}

// wrkLatency reads a "  99%    1.23ms" line of wrk --latency in ms.
func wrkLatency(text, pct string) float64 {
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(pct) + `\s+([0-9.]+)(us|ms|s)\s*$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "us":
		v /= 1000
	case "s":
		v *= 1000
	}
	return v
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// pace offers rate messages/s in total, round robin over the clients, from
// one pacer that wakes every millisecond, while a reader per client counts
// what comes back; it returns how long it offered load. The tail is let in
// before the readers stop.
func pace(clients []*dataClient, rate int, epoch, start, end time.Time) time.Duration {
	send := func(c *dataClient) {
		binary.BigEndian.PutUint64(c.payload, uint64(time.Since(epoch)))
		binary.BigEndian.PutUint32(c.payload[8:], c.seq)
		c.seq++
		if _, err := c.conn.Write(c.pkt); err == nil {
			c.sent++
		}
	}
	var recvWG sync.WaitGroup
	for _, c := range clients {
		recvWG.Add(1)
		go func(c *dataClient) {
			defer recvWG.Done()
			buf := make([]byte, 2048)
			for {
				n, err := c.conn.Read(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
						return
					}
					continue // ICMP port unreachable and the like
				}
				p := c.f.unframe(buf[:n])
				if len(p) < 12 {
					continue
				}
				c.received.Add(1)
				if seq := binary.BigEndian.Uint32(p[8:]); seq&c.rttSampleMask == 0 && len(c.rtts) < 200000 {
					c.rtts = append(c.rtts, int64(time.Since(epoch))-int64(binary.BigEndian.Uint64(p)))
				}
			}
		}(c)
	}
	next := 0
	var sent int64
	for now := time.Now(); now.Before(end); now = time.Now() {
		due := int64(now.Sub(start).Seconds() * float64(rate))
		for ; sent < due; sent++ {
			send(clients[next])
			next = (next + 1) % len(clients)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	for _, c := range clients {
		_ = c.conn.SetReadDeadline(time.Now())
	}
	recvWG.Wait()
	return elapsed
}
