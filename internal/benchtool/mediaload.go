package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// flow is media from one client: every period, a burst of datagrams of
// size bytes sent back to back (one frame).
type flow struct {
	period time.Duration
	burst  int
	size   int
}

// Issue 14's call mix: audio at 50 packets/s of 160 bytes (20 ms of G.711
// or Opus), and video frames 30 times a second, each 8 datagrams of 1,100
// bytes sent together. The scale steps' light traffic is a 100-byte
// datagram every half second.
var (
	audioFlow = flow{period: 20 * time.Millisecond, burst: 1, size: 160}
	videoFlow = flow{period: time.Second / 30, burst: 8, size: 1100}
	lightFlow = flow{period: 500 * time.Millisecond, burst: 1, size: 100}
)

// mediaResult is what a run of media-like load measured.
type mediaResult struct {
	Sent, Received int64
	LossPct        float64
	CPUMicros      float64 // server CPU per relayed message
	// The round trip the relay adds: from the generator's send to the
	// kernel's receive stamp on the echo, less the time the echo peer held
	// the datagram (see payload layout). The bench's own wake-ups are out
	// of it: on two shared cores they were most of the tail.
	P50Micros, P99Micros float64
	// The round trip as the generator's receive loop saw it, wake-ups
	// included: the measure before the kernel stamps, kept for comparison.
	SeenP50Micros, SeenP99Micros float64
}

// A media payload carries the send time (ns since the run's epoch) and a
// sequence number, then holdMark, which asks the echo peer to write how long
// it held the datagram (ns, from its kernel receive stamp to its send) into
// the next 8 bytes.
const (
	payloadSeq      = 8
	payloadHoldMark = 12
	payloadHold     = 16
	payloadMin      = 24
)

var holdMark = [4]byte{'h', 'o', 'l', 'd'}

// mediaClient is one allocation's flows, as packet templates.
type mediaClient struct {
	*dataClient
	fd   int
	pkts [][]byte // per flow: the packet, payload after off
	offs []int
}

// wheelSlot is 1 ms; flows of up to wheelSlots ms fit the timing wheel.
const wheelSlots = 1024

type wheelEvent struct {
	client, flow int32
}

// runMedia sends the flows of each client (flows[i] for client i) for dur,
// from one goroutine that sends what falls due in each 1 ms slot of a
// timing wheel (each flow starts at a random phase, as calls do), while one
// epoll loop over every client socket counts the echoes and their round
// trips. The server's CPU is every thread's run time over the run and its
// tail, per message relayed (sent and echoed).
func runMedia(t target, clients []*dataClient, flows [][]flow, dur time.Duration) (mediaResult, error) {
	var r mediaResult
	mc := make([]*mediaClient, len(clients))
	wheel := make([][]wheelEvent, wheelSlots)
	rng := rand.New(rand.NewPCG(1, uint64(len(clients))))
	for i, c := range clients {
		m := &mediaClient{dataClient: c}
		rc, err := c.conn.SyscallConn()
		if err != nil {
			return r, err
		}
		if err := rc.Control(func(fd uintptr) { m.fd = int(fd) }); err != nil {
			return r, err
		}
		for j, f := range flows[i] {
			pkt, payload := c.f.frame(f.size)
			copy(payload[payloadHoldMark:], holdMark[:])
			m.pkts = append(m.pkts, pkt)
			m.offs = append(m.offs, int(uintptr(unsafe.Pointer(&payload[0]))-uintptr(unsafe.Pointer(&pkt[0]))))
			slot := rng.IntN(int(f.period / time.Millisecond))
			wheel[slot] = append(wheel[slot], wheelEvent{int32(i), int32(j)})
		}
		mc[i] = m
	}
	epoch := time.Now()
	recvDone := make(chan error, 1)
	stopRecv := make(chan struct{})
	var rtts, seen []int64
	go func() { recvDone <- receiveMedia(mc, epoch, stopRecv, &rtts, &seen) }()

	cpu0, _ := threadsCPU(t.server.pid())
	sb := newMsgBatch(16, 2048)
	start := time.Now()
	end := start.Add(dur)
	var slot int // next slot to send, in ms since start
	for now := time.Now(); now.Before(end); now = time.Now() {
		due := int(now.Sub(start) / time.Millisecond)
		for ; slot <= due; slot++ {
			w := slot % wheelSlots
			evs := wheel[w]
			wheel[w] = nil
			for _, ev := range evs {
				m := mc[ev.client]
				f := flows[ev.client][ev.flow]
				// Stamped per burst: a slot's last burst leaves
				// tens of µs after its first.
				m.sendBurst(sb, int(ev.flow), f.burst, uint64(time.Since(epoch)))
				next := (slot + int(f.period/time.Millisecond)) % wheelSlots
				wheel[next] = append(wheel[next], ev)
			}
			if len(evs) > 0 && wheel[w] == nil {
				wheel[w] = evs[:0] // reuse the slice for the slot's next turn
			}
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cpu1, _ := threadsCPU(t.server.pid())
	close(stopRecv)
	if err := <-recvDone; err != nil {
		return r, err
	}
	for _, m := range mc {
		r.Sent += m.sent
		r.Received += m.received.Load()
	}
	if r.Sent > 0 {
		r.LossPct = 100 * float64(r.Sent-r.Received) / float64(r.Sent)
	}
	if h := r.Sent + r.Received; h > 0 {
		r.CPUMicros = float64(cpu1-cpu0) / 1e3 / float64(h)
	}
	r.P50Micros, r.P99Micros = percentilesMicros(rtts)
	r.SeenP50Micros, r.SeenP99Micros = percentilesMicros(seen)
	return r, nil
}

// percentilesMicros sorts d (ns) and gives its p50 and p99 in µs.
func percentilesMicros(d []int64) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return float64(d[len(d)/2]) / 1e3, float64(d[len(d)*99/100]) / 1e3
}

// sendBurst sends k copies of flow j's packet, stamped with the time and a
// sequence number each, with one system call.
func (m *mediaClient) sendBurst(sb *msgBatch, j, k int, ts uint64) {
	pkt, off := m.pkts[j], m.offs[j]
	for i := range k {
		b := sb.bufs[i]
		copy(b, pkt)
		binary.BigEndian.PutUint64(b[off:], ts)
		binary.BigEndian.PutUint32(b[off+payloadSeq:], m.seq)
		m.seq++
	}
	m.sent += int64(sb.sendConnected(m.fd, k, len(pkt)))
}

// receiveMedia counts the echoes of every client from one epoll set until
// stop is closed, keeping every round trip the relay added in rtts (see
// mediaResult) and as this loop saw it in seen.
func receiveMedia(mc []*mediaClient, epoch time.Time, stop <-chan struct{}, rtts, seen *[]int64) error {
	epfd, ep, err := pollableEpoll()
	if err != nil {
		return err
	}
	defer ep.Close()
	for i, m := range mc {
		if err := stampReceives(m.fd); err != nil {
			return err
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, m.fd, &ev); err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		return err
	}
	evs := make([]unix.EpollEvent, 256)
	var n int
	wait := epollWaiter(evs, &n)
	rb := newMsgBatch(16, 2048).withRxTimes()
	wall0 := epoch.UnixNano() // kernel stamps are CLOCK_REALTIME
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		_ = ep.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n = 0
		if err := rc.Read(wait); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("media receive loop: %w", err)
		}
		now := int64(time.Since(epoch))
		for _, ev := range evs[:n] {
			m := mc[ev.Fd]
			for {
				k, e := rb.recv(m.fd)
				if e == unix.EINTR {
					continue
				}
				if e != 0 {
					break
				}
				got := 0
				for j := range k {
					p := m.f.unframe(rb.bufs[j][:rb.hdrs[j].n])
					if len(p) < payloadMin {
						continue
					}
					got++
					sent := int64(binary.BigEndian.Uint64(p))
					rtt := now - sent
					*seen = append(*seen, rtt)
					if rx := rb.rxTime(j); rx != 0 {
						rtt = rx - wall0 - sent - int64(binary.BigEndian.Uint64(p[payloadHold:]))
					}
					*rtts = append(*rtts, rtt)
				}
				m.received.Add(int64(got))
				if k < len(rb.hdrs) {
					break
				}
			}
		}
	}
}

// callMixFlows gives every client audio and one in ten video as well.
func callMixFlows(n int) [][]flow {
	flows := make([][]flow, n)
	for i := range flows {
		flows[i] = []flow{audioFlow}
		if i%10 == 0 {
			flows[i] = append(flows[i], videoFlow)
		}
	}
	return flows
}

// runCallMix sets up n allocations on t (channels to peer) and sends them
// issue 14's call mix for dur.
func runCallMix(t target, o opts, peer netip.AddrPort, n int, dur time.Duration) (mediaResult, error) {
	clients, err := setupClients(t, o, peer, dataSpec{mode: "channel", size: 100, clients: n})
	if err != nil {
		return mediaResult{}, err
	}
	defer closeClients(clients)
	return runMedia(t, clients, callMixFlows(n), dur)
}

// callMixName names the call mix of n allocations in the report.
func callMixName(n int) string {
	return fmt.Sprintf("call mix, %d allocations (audio 50 × 160 B/s each, 10%% also video 30 × 8 × 1100 B/s)", n)
}

func (r *report) addCallMix(n int, tgt string, m mediaResult) {
	what := callMixName(n)
	r.add("server CPU per relayed message, "+what, fmt.Sprintf("CPU call mix %d", n), "µs", false, tgt, m.CPUMicros)
	r.add("round trip p50, "+what, "", "µs", false, tgt, m.P50Micros)
	r.add("round trip p99, "+what, fmt.Sprintf("RTT p99 call mix %d", n), "µs", false, tgt, m.P99Micros)
	r.add("round trip p99 as the generator saw it (its and the echo peer's wake-ups included), "+what, "", "µs", false, tgt, m.SeenP99Micros)
	r.add("loss, "+what, "", "%", false, tgt, m.LossPct)
}
