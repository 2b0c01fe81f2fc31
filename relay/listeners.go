package relay

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/traverse/traverse/relay/internal/sockio"
)

const (
	// listenerSocketBuffer is asked for on the shared listener sockets
	// (the kernel doubles it, within net.core.rmem_max): room for a burst
	// of media well beyond the default ~200 KB, but a queue that a busy
	// shard drains in tens of milliseconds. Deeper only holds media until
	// it is too late to play: with 4 MB, the 1,000-allocation call mix of
	// scripts/bench (an overload on 2 cores) had a p99 round trip of
	// 300-510 ms against 50-200 ms with 1 MB (docs/design.md, Performance V).
	listenerSocketBuffer = 1 << 20
	// unauthenticatedTimeout closes a TCP/TLS connection that has not made an
	// allocation, so idle connections cannot pile up.
	unauthenticatedTimeout = 30 * time.Second
	// idleTimeout closes a connection whose allocation has gone quiet for
	// longer than the longest TURN lifetime.
	idleTimeout = 11 * time.Minute
	// sniffTimeout bounds the wait for a TLS client's first byte and handshake.
	sniffTimeout = 10 * time.Second
	// pressureTimeout replaces the two above for connections accepted while
	// their listener is over pressureShare full, so a flood of idle
	// connections drains faster than it can fill the listener.
	pressureTimeout = 5 * time.Second
	pressureShare   = 0.75
	// acceptBackoffMin and acceptBackoffMax bound the pause after a failed
	// accept (out of descriptors, say), doubling as net/http does.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// acceptLogEvery bounds how often a failing listener logs at error level.
	acceptLogEvery = time.Minute
)

// maxStreamConns bounds the open connections of one TCP/TLS listener, so a
// connection flood costs a bounded number of goroutines and descriptors. A
// variable so that a test can lower it.
var maxStreamConns = 16384

// network picks "udp4"/"udp6" (or tcp) from the host, so 0.0.0.0:3478 and
// [::]:3478 can both be bound.
func network(base, addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if host != "" && ip == nil {
		return "", fmt.Errorf("host %q is not an IP address", host)
	}
	if ip != nil && ip.To4() == nil {
		return base + "6", nil
	}
	return base + "4", nil
}

// listenUDP binds n SO_REUSEPORT sockets on addr, so the kernel spreads
// clients over the n data-path shards. With port 0 the first socket picks
// the port and the rest join it.
func listenUDP(addr string, n int) ([]*sockio.UDPSocket, error) {
	nw, err := network("udp", addr)
	if err != nil {
		return nil, err
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	var socks []*sockio.UDPSocket
	for i := 0; i < n; i++ {
		u, err := sockio.Open(nw, net.ParseIP(host), port, true, listenerSocketBuffer, listenerSocketBuffer)
		if err != nil {
			for _, u := range socks {
				_ = u.Close()
			}
			return nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		socks = append(socks, u)
		port = u.LocalAddr().Port
	}
	return socks, nil
}

// listenTCP binds a TCP listener.
func listenTCP(addr string) (net.Listener, error) {
	nw, err := network("tcp", addr)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen(nw, addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return l, nil
}

// udpListener is one UDP listener socket. A data-path shard polls it and
// relays media itself; the rest goes through the inbox to the listener's
// control loop (serve). Answers are raw non-blocking sends.
type udpListener struct {
	s       *Server
	sock    *sockio.UDPSocket
	localAP netip.AddrPort
	inbox   *inbox
	replies *replyBatch
	// addrs is the shard's cache of client addresses for the control loop.
	addrs map[netip.AddrPort]*net.UDPAddr
}

// replyBatch gathers the control loop's answers on one listener socket. The
// loop answers each request before it reads the next, so while requests are
// waiting its answers are queued, and they all go out in one sendmmsg when
// the loop is about to wait (or the queue is full). While the loop waits,
// any write goes out at once, so nothing is held back.
type replyBatch struct {
	mu      sync.Mutex
	waiting bool // the control loop is waiting for a request
	q       *sockio.SendQueue
	bufs    [][]byte
	failed  func(n int)
}

// replyBatchSize bounds how many answers wait for one send.
const replyBatchSize = 16

func newReplyBatch(failed func(n int)) *replyBatch {
	r := &replyBatch{q: sockio.NewSendQueue(replyBatchSize), bufs: make([][]byte, replyBatchSize), failed: failed}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, sockio.ReadBuffer)
	}
	return r
}

// add queues a copy of p for to; false means send it now instead.
func (r *replyBatch) add(p []byte, via *sockio.UDPSocket, to *sockio.Sockaddr) bool {
	if len(p) == 0 || len(p) > sockio.ReadBuffer {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting {
		return false
	}
	if r.q.Len() == replyBatchSize {
		r.flushLocked()
	}
	b := r.bufs[r.q.Len()][:len(p)]
	copy(b, p)
	r.q.Add(b, via, to)
	return true
}

// wait marks the read loop as waiting, sending what is queued; busy marks
// it as handling a request again.
func (r *replyBatch) wait() {
	r.mu.Lock()
	r.waiting = true
	r.flushLocked()
	r.mu.Unlock()
}

func (r *replyBatch) busy() {
	r.mu.Lock()
	r.waiting = false
	r.mu.Unlock()
}

func (r *replyBatch) flushLocked() {
	if r.q.Len() == 0 {
		return
	}
	if n := r.q.Flush(); n > 0 {
		r.failed(n)
	}
}

// listenerInbox is how many datagrams may wait for the control loop.
const listenerInbox = 1024

func newUDPListener(s *Server, sock *sockio.UDPSocket) *udpListener {
	return &udpListener{s: s, sock: sock, localAP: addrPort(sock.LocalAddr()),
		inbox: newInbox(listenerInbox, s.metrics.inboxDrops), addrs: map[netip.AddrPort]*net.UDPAddr{},
		replies: newReplyBatch(func(n int) { s.metrics.sendErrors.Add(float64(n)) })}
}

// serve is the listener's control loop: it handles what the data path
// handed over, one request at a time, until the listener closes.
func (u *udpListener) serve() {
	buf := make([]byte, sockio.ReadBuffer)
	local := u.sock.LocalAddr()
	for {
		n, addr, ok, err := u.inbox.tryRead(buf)
		if !ok && err == nil {
			u.replies.wait()
			n, addr, err = u.inbox.read(buf)
			u.replies.busy()
		}
		if err != nil {
			return
		}
		u.s.control(buf[:n], addr, local, u, nil)
	}
}

// reply sends an answer to a client.
func (u *udpListener) reply(p []byte, to net.Addr) {
	ua, ok := to.(*net.UDPAddr)
	if !ok {
		return
	}
	sa := sockio.MakeSockaddr(ua.AddrPort(), u.sock.V6())
	if u.replies.add(p, u.sock, &sa) {
		return
	}
	if err := u.sock.SendTo(p, &sa); err != nil {
		u.s.metrics.sendErrors.Inc()
	}
}

func (u *udpListener) Close() error {
	u.inbox.close()
	err := u.sock.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// streamListener serves TCP (or sniffed TLS) connections, each wrapped in a
// streamConn read by a goroutine of its own (serveStream). With a TLS
// config it tells TLS from plain TURN by the first byte (0x16 starts a TLS
// handshake; STUN and ChannelData never do), as coturn does, so one port
// serves both turn: and turns: URIs. The sniff and handshake run off the
// accept loop so a slow client holds up no one.
type streamListener struct {
	net.Listener
	s      *Server
	kind   string // "tcp" or "tls", for metrics and /readyz
	tlsCfg *tls.Config
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	open   atomic.Int64 // connections accepted and not yet closed
	max    int64
}

func newStreamListener(s *Server, l net.Listener, tlsCfg *tls.Config) *streamListener {
	sl := &streamListener{Listener: l, s: s, kind: "tcp", tlsCfg: tlsCfg, done: make(chan struct{}),
		max: int64(s.maxStreamConns)}
	if tlsCfg != nil {
		sl.kind = "tls"
	}
	sl.wg.Add(1)
	go sl.acceptLoop()
	return sl
}

// acceptLoop accepts until the listener is closed. A failed accept — out of
// descriptors (EMFILE, ENFILE), of buffers, an aborted handshake — pauses
// the loop (5 ms doubling to 1 s) and it carries on, counted and logged at
// most once a minute; an error it does not know stops the listener, which
// /readyz then names.
func (sl *streamListener) acceptLoop() {
	defer sl.wg.Done()
	var delay time.Duration
	var lastLog time.Time
	suppressed := 0
	for {
		c, err := sl.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) { // closed by us
				sl.once.Do(func() { close(sl.done) })
				return
			}
			if !retryableAccept(err) {
				sl.s.listenerStopped(sl.kind, sl.Addr(), err)
				sl.once.Do(func() { close(sl.done) })
				return
			}
			sl.s.metrics.acceptErrors.WithLabelValues(sl.kind).Inc()
			if now := time.Now(); now.Sub(lastLog) >= acceptLogEvery {
				sl.s.log.Error("accept failed; retrying", zap.String("transport", sl.kind),
					zap.Stringer("listener", sl.Addr()), zap.Error(err), zap.Int("suppressed", suppressed))
				lastLog, suppressed = now, 0
			} else {
				suppressed++
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			select {
			case <-time.After(delay):
			case <-sl.done:
				return
			}
			continue
		}
		delay = 0
		if sl.open.Add(1) > sl.max {
			sl.open.Add(-1)
			sl.s.metrics.streamRejected.Inc()
			_ = c.Close()
			continue
		}
		src := sourceOf(c.RemoteAddr())
		if !sl.s.pending.add(src, sl.s.state.Load().pendingPerIP) {
			sl.open.Add(-1)
			sl.s.metrics.streamPerIPRejected.Inc()
			_ = c.Close()
			continue
		}
		sl.wg.Add(1)
		go func() {
			defer sl.wg.Done()
			sl.prepare(c, src)
		}()
	}
}

// retryableAccept tells the accept errors that pass (RFC-less but what
// net/http and every server retries) from a listener that is gone.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// authTimeout is how long a connection accepted now may stay
// unauthenticated: shorter while the listener is under pressure.
func (sl *streamListener) authTimeout() time.Duration {
	if float64(sl.open.Load()) > pressureShare*float64(sl.max) {
		sl.s.metrics.streamPressure.Inc()
		return pressureTimeout
	}
	return unauthenticatedTimeout
}

func (sl *streamListener) prepare(c net.Conn, src netip.Addr) {
	var conn net.Conn = newRawReadConn(c)
	var seal *tls.Conn
	var wire *wireConn
	authWait := sl.authTimeout()
	if sl.tlsCfg != nil {
		_ = c.SetDeadline(time.Now().Add(min(sniffTimeout, authWait)))
		br := bufio.NewReaderSize(conn, 1600)
		first, err := br.Peek(1)
		if err != nil {
			sl.drop(c, src)
			return
		}
		conn = &peekedConn{Conn: conn, r: br}
		if first[0] == 0x16 {
			wire = &wireConn{Conn: conn}
			seal = tls.Server(wire, sl.tlsCfg)
			if err := seal.Handshake(); err != nil {
				sl.s.metrics.tlsHandshakeFailed.Inc()
				if ce := sl.s.log.Check(zap.DebugLevel, "tls handshake failed"); ce != nil {
					ce.Write(zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
				}
				sl.drop(c, src)
				return
			}
			conn = seal
		}
		_ = c.SetDeadline(time.Time{})
	}
	sc := &streamConn{Conn: conn, raw: c, s: sl.s, key: allocKey(c.RemoteAddr(), c.LocalAddr()), accepted: time.Now(),
		release: func() { sl.open.Add(-1) }, tuple: clientKey{addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())},
		rbuf: make([]byte, streamReadBuffer)}
	sc.authWait, sc.unpend = authWait, func() { sl.s.pending.remove(src) }
	sc.tls = seal != nil
	sc.out = newStreamOut(c, seal, sl.s, func() { _ = c.Close() })
	if wire != nil {
		wire.out = sc.out // from here on, records go through the queue
	}
	if !sl.s.streams.add(sc) { // the server is closing
		_ = sc.Close()
		return
	}
	sl.s.serveStream(sc)
}

// drop closes a connection that was never served.
func (sl *streamListener) drop(c net.Conn, src netip.Addr) {
	_ = c.Close()
	sl.open.Add(-1)
	sl.s.pending.remove(src)
}

// Close stops accepting and waits for the connections' goroutines, which
// Server.Close has ended (endStreams).
func (sl *streamListener) Close() error {
	err := sl.Listener.Close()
	sl.once.Do(func() { close(sl.done) })
	sl.wg.Wait()
	return err
}

// peekedConn replays the bytes the sniffer peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// streamConn is a client's TCP or TLS connection. Its Read relays the
// client's data itself and returns the rest for the control plane
// (streamin.go); everything written to the client — answers, and peers'
// data from the data path — goes through its send queue (out,
// streamout.go). It also closes connections that never allocate or go idle.
type streamConn struct {
	net.Conn
	raw      net.Conn // the TCP connection under TLS
	s        *Server
	key      string
	tuple    clientKey // client and listener address
	tls      bool
	accepted time.Time
	authWait time.Duration // unauthenticatedTimeout, or pressureTimeout
	out      *streamOut
	release  func() // frees the listener's connection slot, once
	closed   sync.Once
	unpend   func() // frees the source's pending slot, once
	unpended sync.Once

	// Read's state; only the connection's goroutine touches it.
	rbuf       []byte // bytes read, rbuf[rpos:rend] not yet framed
	rpos, rend int
	skip       int       // bytes of an oversized frame still to pass over
	deadline   time.Time // the read deadline last set
	count      tally
	// relay is the allocation's relay socket once it is made.
	relay atomic.Pointer[relayConn]
}

// Close closes the connection and frees its slots. It closes the TCP
// connection itself, not the TLS layer, whose close_notify would wait for a
// write stuck on a stalled client.
func (c *streamConn) Close() error {
	err := c.raw.Close()
	c.closed.Do(func() {
		c.s.streams.remove(c)
		c.out.close()
		c.release()
	})
	c.unpended.Do(c.unpend)
	return err
}

// reply queues an answer for the client; it never waits for the client.
func (c *streamConn) reply(b []byte, _ net.Addr) {
	_ = c.out.queueAnswer(b) // a closed queue: the connection is ending
}

// serveStream reads a client's connection until it ends: the data path's
// frames are relayed inside Read, the rest goes to the control plane. The
// allocation ends with the connection: over TCP the connection is the
// 5-tuple (RFC 8656 § 2).
func (s *Server) serveStream(sc *streamConn) {
	buf := make([]byte, streamReadBuffer)
	local, remote := sc.LocalAddr(), sc.RemoteAddr()
	for {
		n, err := sc.Read(buf)
		if err != nil {
			break
		}
		s.control(buf[:n], remote, local, sc, sc)
	}
	if rc := sc.relay.Load(); rc != nil {
		s.endAllocation(sc.key, rc) // this connection's, not a later one's on the same tuple
	}
	_ = sc.Close()
}
