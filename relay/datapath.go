package relay

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/sys/unix"

	"github.com/traverse/traverse/relay/internal/frames"
	"github.com/traverse/traverse/relay/internal/sockio"
)

// The data path moves relayed UDP media. Each shard is one goroutine with
// its own epoll set holding one socket of every UDP listener (the kernel
// spreads clients over the SO_REUSEPORT sockets) and a share of the relay
// sockets. On a wake-up it reads every ready socket in recvmmsg batches and
// relays what it can on the spot:
//
//   - client -> peer: ChannelData and Send indications of a UDP allocation;
//   - peer -> client: to a UDP client, as ChannelData when the peer has a
//     channel, as a Data indication when it has a permission; to a TCP or
//     TLS client, on its connection's send queue (streamout.go);
//   - STUN Binding requests.
//
// Everything else — every request that creates or changes state — goes to
// the listener's control loop (control.go) through its inbox. The routes the
// data path reads (which client owns an allocation, its channels and
// permissions) are set by the control plane before it answers the request
// that made them, so a client can never use a channel the data path does not
// know yet. The per-datagram rules — the peer policy, the bandwidth cap, the
// counters — are the same functions whichever path carries a datagram.
//
// Why: a goroutine wake-up per datagram (a read loop per listener and per
// allocation, as pion/turn's server has) costs more than the relaying;
// coturn pays one epoll_wait per batch on one thread. See docs/design.md.

// shard is one data-path goroutine and its epoll set.
type shard struct {
	s     *Server
	index int
	epfd  int
	wake  int // eventfd; a write stops the loop
	file  *os.File
	evs   []unix.EpollEvent

	mu   sync.Mutex
	ends map[uint64]endpoint // by registration id
	next uint64

	in *sockio.MmsgBatch // listener reads
	// Relay socket reads, with room for a header in front. Slots [0,
	// sends.n) hold framed messages waiting in sends; the rest are free.
	peer  *sockio.MmsgBatch
	sends *sockio.SendQueue
	// Client datagrams of one listener batch on their way to peers, sent
	// with one sendmmsg per relay socket before the batch is read over.
	toPeers *sockio.SendQueue
	// Stream clients' queues this wake-up appended to, pushed at flush.
	streams []*streamOut
	count   tally
	out     [128]byte // a Binding response
	txid    *frames.TxidSource

	done chan struct{}
}

// endpoint is a socket the shard polls.
type endpoint interface {
	readable(sh *shard)
}

// wakeID marks the eventfd's registration; socket ids start above it.
const wakeID = 0

// maxEvents is how many ready sockets one epoll_wait may return.
const maxEvents = 64

// peerSlots is how many peer datagrams the shard holds: when fewer than a
// batch are free it sends what it has queued.
const peerSlots = 2 * sockio.BatchSize

func newShard(s *Server, index int) (*shard, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	sh := &shard{
		s: s, index: index, epfd: epfd, wake: wake,
		evs:   make([]unix.EpollEvent, maxEvents),
		ends:  map[uint64]endpoint{},
		next:  wakeID + 1,
		in:    sockio.NewMmsgBatch(0, sockio.BatchSize),
		peer:  sockio.NewMmsgBatch(frames.Headroom, peerSlots),
		sends: sockio.NewSendQueue(peerSlots),

		toPeers: sockio.NewSendQueue(sockio.BatchSize),
		txid:    frames.NewTxidSource(),
		done:    make(chan struct{}),
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	// The epoll set itself is pollable: the shard parks in Go's netpoller
	// on it, so an idle shard costs nothing and a busy one is woken once
	// per batch of ready sockets, not once per socket or datagram.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	sh.file = os.NewFile(uintptr(epfd), "epoll")
	return sh, nil
}

func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// add starts polling sock for ep and returns the registration id.
func (sh *shard) add(sock *sockio.UDPSocket, ep endpoint) (uint64, error) {
	sh.mu.Lock()
	id := sh.next
	sh.next++
	sh.ends[id] = ep
	sh.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, id)
	err := sock.Control(func(fd int) error { return unix.EpollCtl(sh.epfd, unix.EPOLL_CTL_ADD, fd, &ev) })
	if err != nil {
		sh.forget(id)
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	return id, nil
}

// forget drops a registration. Closing the socket has already taken it out
// of the epoll set; an event for it still in hand finds no endpoint, or one
// whose socket reads as closed.
func (sh *shard) forget(id uint64) {
	sh.mu.Lock()
	delete(sh.ends, id)
	sh.mu.Unlock()
}

func (sh *shard) endpoint(id uint64) endpoint {
	sh.mu.Lock()
	ep := sh.ends[id]
	sh.mu.Unlock()
	return ep
}

// run is the shard's loop; it returns when stop is called.
func (sh *shard) run() {
	defer close(sh.done)
	rc, err := sh.file.SyscallConn()
	if err != nil {
		sh.s.log.Error("data path cannot poll its epoll set")
		return
	}
	var n int
	wait := func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, fd, uintptr(unsafe.Pointer(&sh.evs[0])), uintptr(len(sh.evs)), 0, 0, 0)
		if e != 0 || r == 0 {
			return false
		}
		n = int(r)
		return true
	}
	for {
		if err := rc.Read(wait); err != nil {
			return
		}
		for i := 0; i < n; i++ {
			id := eventID(&sh.evs[i])
			if id == wakeID {
				return
			}
			if ep := sh.endpoint(id); ep != nil {
				ep.readable(sh)
			}
		}
		sh.flush()
	}
}

// flush sends the queued messages and adds the wake-up's tally to the
// metrics: one sendmmsg and one set of atomic adds per wake-up, not per
// datagram.
func (sh *shard) flush() {
	// Counted before sent, so the counters are never behind what a client
	// has seen.
	sh.count.flush(sh.s.metrics)
	if sh.sends.Len() > 0 {
		if failed := sh.sends.Flush(); failed > 0 {
			sh.s.metrics.sendErrors.Add(float64(failed))
		}
	}
	for i, o := range sh.streams {
		o.queued = false
		o.push()
		sh.streams[i] = nil
	}
	sh.streams = sh.streams[:0]
}

// tally counts relayed datagrams between flushes.
type tally struct {
	toPeer, toPeerBytes, fromPeer, fromPeerBytes int
}

func (t *tally) flush(m *metrics) {
	if t.toPeer > 0 {
		m.packetsToPeer.Add(float64(t.toPeer))
		m.bytesToPeer.Add(float64(t.toPeerBytes))
	}
	if t.fromPeer > 0 {
		m.packetsFromPeer.Add(float64(t.fromPeer))
		m.bytesFromPeer.Add(float64(t.fromPeerBytes))
	}
	*t = tally{}
}

// stop ends the loop and releases the epoll set.
func (sh *shard) stop() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(sh.wake, one[:])
	<-sh.done
	_ = sh.file.Close()
	_ = unix.Close(sh.wake)
}

// readable drains one batch from a listener socket: relay what it can,
// hand the rest to the control loop.
func (u *udpListener) readable(sh *shard) {
	b := sh.in
	if !b.Recv(u.sock, 0) {
		return
	}
	for i := 0; i < b.Len(); i++ {
		buf, n, src, ok := b.Datagram(i)
		if !ok {
			continue
		}
		p := buf[:n]
		if frames.IsChannelData(p) {
			u.channelData(sh, p, src)
			continue
		}
		switch frames.STUNType(p) {
		case frames.TypeBindingRequest:
			u.answerBinding(sh, p, src)
			continue
		case frames.TypeSendIndication:
			if u.sendIndication(sh, p, src) {
				continue
			}
		}
		u.inbox.put(p, u.addrOf(src))
	}
	if sh.toPeers.Len() > 0 {
		sh.count.flush(sh.s.metrics)
		sh.toPeers.Group()
		if failed := sh.toPeers.Flush(); failed > 0 {
			sh.s.metrics.sendErrors.Add(float64(failed))
		}
	}
}

// channelData relays a client's ChannelData to the channel's peer. With no
// such allocation or channel it is dropped, as pion drops it.
func (u *udpListener) channelData(sh *shard, p []byte, src netip.AddrPort) {
	rc := u.s.route(src, u.localAP)
	if rc == nil {
		u.s.metrics.unroutable.Inc()
		return
	}
	data, ch, ok := rc.routes.Load().channelData(p)
	if !ok {
		u.s.metrics.unroutable.Inc()
		return
	}
	sh.queueToPeer(rc, data, ch.peer, &ch.sa)
}

// queueToPeer queues a client's datagram for its peer, if the relay's rules
// let it through; an empty one (which has no buffer to point to) goes out
// at once.
func (sh *shard) queueToPeer(rc *relayConn, p []byte, peer netip.AddrPort, sa *sockio.Sockaddr) {
	if !rc.admit(p, peer, &sh.count) {
		return
	}
	if len(p) == 0 {
		_ = rc.send(p, sa)
		return
	}
	sh.toPeers.Add(p, rc.sock, sa)
}

// sendIndication relays a client's Send indication to a permitted peer. It
// returns false for one it cannot parse, left to the control loop.
func (u *udpListener) sendIndication(sh *shard, p []byte, src netip.AddrPort) bool {
	rc := u.s.route(src, u.localAP)
	if rc == nil {
		u.s.metrics.unroutable.Inc()
		return true
	}
	peer, data, sa, ok := rc.sendTarget(p)
	if ok && sa.Valid() {
		sh.queueToPeer(rc, data, peer, &sa)
	}
	return ok
}

// answerBinding answers a Binding request with the client's reflexive
// address (XOR-MAPPED-ADDRESS and FINGERPRINT).
func (u *udpListener) answerBinding(sh *shard, req []byte, src netip.AddrPort) {
	resp := frames.AppendBindingSuccess(sh.out[:0], req, src)
	sa := sockio.MakeSockaddr(src, u.sock.V6())
	if err := u.sock.SendTo(resp, &sa); err != nil {
		u.s.metrics.sendErrors.Inc()
	}
}

// addrOf returns src as a *net.UDPAddr for the control loop, reusing the
// last one made for that source (only the shard's goroutine calls it).
func (u *udpListener) addrOf(src netip.AddrPort) *net.UDPAddr {
	if a, ok := u.addrs[src]; ok {
		return a
	}
	if len(u.addrs) >= maxCachedAddrs {
		clear(u.addrs)
	}
	a := sockio.UDPAddr(src)
	u.addrs[src] = a
	return a
}

// maxCachedAddrs bounds a listener's address cache; it is cleared when full.
const maxCachedAddrs = 4096

// readable drains one batch from a relay socket (peer -> client). Messages
// for a UDP client are framed in place and queued; the shard sends them
// all at its next flush.
func (c *relayConn) readable(sh *shard) {
	b := sh.peer
	if peerSlots-sh.sends.Len() < sockio.BatchSize {
		sh.flush()
	}
	if !b.Recv(c.sock, sh.sends.Len()) {
		return
	}
	rt := c.routes.Load()
	for i := b.First(); i < b.First()+b.Len(); i++ {
		buf, n, src, ok := b.Datagram(i)
		if !ok || !c.fromPeer(n, &sh.count) {
			continue
		}
		if rt.out == nil && rt.stream == nil {
			// Before the allocation is answered: nothing may be relayed yet.
			c.s.metrics.unroutable.Inc()
			continue
		}
		var msg []byte
		if num, ok := rt.byPeer.get(src); ok {
			msg = frames.ChannelData(buf, n, num) // padded, as a stream needs
		} else if _, ok := rt.perms.get(src.Addr()); ok {
			msg = frames.DataIndication(buf, n, src, sh.txid.Next())
		} else {
			c.s.metrics.unroutable.Inc()
			continue
		}
		if rt.stream != nil {
			// Copied (or sealed): the buffer is free again. Written at
			// the wake-up's flush, with whatever else it brings the client.
			if o := rt.stream.out; o.queueData(msg) && !o.queued {
				o.queued = true
				sh.streams = append(sh.streams, o)
			}
			continue
		}
		// Keep the buffer out of the next recv until it is sent.
		b.Swap(i, sh.sends.Len())
		sh.sends.Add(msg, rt.out, &rt.client)
	}
}

// inbox hands a listener's control loop the datagrams the data path does
// not relay itself. A full inbox drops, as a full socket buffer would.
type inbox struct {
	ch     chan *inPacket
	drops  prometheus.Counter
	mu     sync.Mutex // orders put against close, so nothing is sent on a closed channel
	closed bool
}

type inPacket struct {
	b    [sockio.ReadBuffer]byte
	n    int
	addr *net.UDPAddr
}

var inPackets = sync.Pool{New: func() any { return new(inPacket) }}

func newInbox(size int, drops prometheus.Counter) *inbox {
	return &inbox{ch: make(chan *inPacket, size), drops: drops}
}

func (q *inbox) put(p []byte, addr *net.UDPAddr) {
	pk := inPackets.Get().(*inPacket)
	pk.n = copy(pk.b[:], p)
	pk.addr = addr
	q.mu.Lock()
	sent := false
	if !q.closed {
		select {
		case q.ch <- pk:
			sent = true
		default:
		}
	}
	q.mu.Unlock()
	if !sent {
		pk.addr = nil
		inPackets.Put(pk)
		q.drops.Inc()
	}
}

// tryRead is read without waiting: ok is false when nothing is queued.
func (q *inbox) tryRead(p []byte) (n int, addr net.Addr, ok bool, err error) {
	select {
	case pk, open := <-q.ch:
		if !open {
			return 0, nil, false, net.ErrClosed
		}
		n, addr = copy(p, pk.b[:pk.n]), pk.addr
		pk.addr = nil
		inPackets.Put(pk)
		return n, addr, true, nil
	default:
		return 0, nil, false, nil
	}
}

// read returns the next datagram, or net.ErrClosed once the inbox is closed
// and empty.
func (q *inbox) read(p []byte) (int, net.Addr, error) {
	pk, ok := <-q.ch
	if !ok {
		return 0, nil, net.ErrClosed
	}
	n, addr := copy(p, pk.b[:pk.n]), pk.addr
	pk.addr = nil
	inPackets.Put(pk)
	return n, addr, nil
}

func (q *inbox) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
}
