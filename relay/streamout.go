package relay

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How a stream (TCP or TLS) client's send queue is bounded. Variables so
// that a test can lower them; a Server copies them when it starts.
var (
	// streamQueueBytes caps what may wait for a stream client: peers' data
	// beyond it is dropped and counted (a full socket buffer would drop a
	// UDP client's the same way). Answers may use twice as much, so
	// a burst of media never crowds out a ChannelBind or Refresh answer.
	streamQueueBytes = 256 << 10
	// streamWriteTimeout closes a client that has taken nothing for this
	// long while data waited for it: it is stalled or gone, and its
	// allocation should not hold a relay port and a queue until it expires.
	streamWriteTimeout = 10 * time.Second
)

// streamKeep is the largest buffer a queue keeps between bursts; a larger
// one, grown by a burst, is let go.
const streamKeep = 64 << 10

// streamOut is a stream client's send queue: how peers' data and the
// answers reach a TCP or TLS client. Whoever has something for the client
// appends it (the data path's shard for peers' data, the connection's goroutine for
// its answers) and then pushes the queue: one non-blocking write straight to
// the socket. Only when the client's TCP window is full does what is left go
// to the connection's writer goroutine, which waits for the window under a
// write timeout. So a round trip costs no goroutine wake-up on the way back,
// neither the connection's goroutine nor a shard ever waits on a client, and one
// stalled client holds up no other.
//
// A shard appends everything one wake-up brings for a client and pushes it
// once at the end (shard.flush): one write system call per wake-up, as
// coturn's. For turns: each message is sealed in a TLS record of its own
// (coturn's turnutils_uclient reads one message per record and drops the
// rest of a record that holds several: measured, 256 of 300 lost), and the
// records of a wake-up still leave in one write.
type streamOut struct {
	m       *metrics
	limit   int           // streamQueueBytes
	timeout time.Duration // streamWriteTimeout
	conn    net.Conn      // the TCP connection: the writer's blocking writes
	raw     syscall.RawConn
	// seal is the TLS layer of a turns: connection: messages are written
	// through it, and its records come back to appendWire.
	seal *tls.Conn

	mu       sync.Mutex
	pending  []byte // bytes for the wire, not yet written
	inFlight bool   // the writer holds the socket; only it may write
	closed   bool
	wake     chan struct{} // one slot: the writer has something to do
	done     chan struct{} // closed when the writer has returned
	// fail ends the connection after a failed or timed-out write.
	fail func()

	// The non-blocking write's argument and results, under mu: a method
	// value made once, so a push allocates nothing.
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool

	// queued: a shard will push this queue at its flush. Only the shard
	// that polls the allocation's relay socket touches it.
	queued bool
}

func newStreamOut(conn net.Conn, seal *tls.Conn, s *Server, fail func()) *streamOut {
	o := &streamOut{conn: conn, seal: seal, m: s.metrics, limit: s.streamQueueBytes, timeout: s.streamWriteTimeout, fail: fail,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
		}
	}
	o.writeFn = o.writeRaw
	go o.run()
	return o
}

// queue appends one message if what waits would stay under limit: as it
// is on TCP (one lock), sealed in a record on TLS (the record comes back
// through appendWire). queued is false when it did not fit.
func (o *streamOut) queue(p []byte, limit int) (queued bool, err error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false, net.ErrClosed
	}
	fits := len(o.pending)+len(p) <= limit
	if fits && o.seal == nil {
		o.pending = append(o.pending, p...)
	}
	o.mu.Unlock()
	if !fits || o.seal == nil {
		return fits, nil
	}
	if _, err := o.seal.Write(p); err != nil {
		return false, err
	}
	return true, nil
}

// appendWire queues bytes for the wire.
func (o *streamOut) appendWire(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return net.ErrClosed
	}
	o.pending = append(o.pending, p...)
	return nil
}

// queueData queues a framed ChannelData message or Data indication from a
// peer, counting a drop when the client is too far behind. It reports
// whether the queue now needs a push.
func (o *streamOut) queueData(p []byte) bool {
	queued, err := o.queue(p, o.limit)
	if err == nil && !queued {
		o.m.streamQueueFull.Inc()
	}
	return queued
}

// queueAnswer queues an answer to the client and pushes it. Answers may use twice the data's room, so a burst of media never
// crowds out a ChannelBind or Refresh answer.
func (o *streamOut) queueAnswer(p []byte) error {
	queued, err := o.queue(p, 2*o.limit)
	if err != nil {
		return err
	}
	if !queued {
		o.m.streamQueueFull.Inc()
		return nil // dropped as a full buffer drops; the write timeout ends a stalled client
	}
	o.push()
	return nil
}

// push writes what is pending without waiting. What the socket does not
// take now goes to the writer.
func (o *streamOut) push() {
	o.mu.Lock()
	if o.closed || o.inFlight || len(o.pending) == 0 {
		o.mu.Unlock()
		return
	}
	n, dead := o.writeNow(o.pending)
	if dead {
		o.mu.Unlock()
		o.fail()
		return
	}
	if n == len(o.pending) {
		o.pending = o.pending[:0]
		if cap(o.pending) > streamKeep {
			o.pending = nil
		}
		o.mu.Unlock()
		return
	}
	o.pending = o.pending[:copy(o.pending, o.pending[n:])]
	o.inFlight = true
	select {
	case o.wake <- struct{}{}:
	default:
	}
	o.mu.Unlock()
}

// writeNow writes p with one non-blocking send: n is what the socket took;
// dead means the connection is gone. With no raw socket it writes nothing
// and the writer does it all.
func (o *streamOut) writeNow(p []byte) (n int, dead bool) {
	if o.raw == nil {
		return 0, false
	}
	o.wbuf = p
	err := o.raw.Write(o.writeFn)
	o.wbuf = nil
	switch {
	case err != nil:
		return 0, true
	case o.werr == 0:
		return o.wn, false
	case o.werr == unix.EAGAIN:
		return 0, false
	}
	return 0, true
}

// writeRaw is the non-blocking send: MSG_NOSIGNAL, so a client gone away
// is an EPIPE here and not a signal.
func (o *streamOut) writeRaw(fd uintptr) bool {
	p := o.wbuf
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
			unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		if e == unix.EINTR {
			continue
		}
		o.wn, o.werr = int(n), e
		if e != 0 {
			o.wn = 0
		}
		return true
	}
}

// run waits for the client's window whenever a push could not write
// everything, then writes until the queue is empty, until the connection
// closes or a write fails.
func (o *streamOut) run() {
	defer close(o.done)
	var buf []byte
	for range o.wake {
		for {
			o.mu.Lock()
			if o.closed {
				o.mu.Unlock()
				return
			}
			if len(o.pending) == 0 {
				o.inFlight = false
				o.mu.Unlock()
				break
			}
			buf, o.pending = o.pending, buf[:0]
			o.mu.Unlock()
			_ = o.conn.SetWriteDeadline(time.Now().Add(o.timeout))
			if _, err := o.conn.Write(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					o.m.streamWriteTimeouts.Inc()
				}
				o.fail()
				return
			}
			if cap(buf) > streamKeep {
				buf = nil
			}
		}
	}
}

// close stops the writer; what is still pending is dropped with the
// connection.
func (o *streamOut) close() {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		close(o.wake)
	}
	o.mu.Unlock()
}

// wireConn is what a turns: connection's TLS layer writes to: during the
// handshake the TCP connection itself, then the send queue.
type wireConn struct {
	net.Conn
	out *streamOut
}

func (w *wireConn) Write(p []byte) (int, error) {
	if w.out == nil {
		return w.Conn.Write(p)
	}
	if err := w.out.appendWire(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// streamTable finds a stream client's connection by its 5-tuple (client
// and listener address), so that the data path can write peers' data to it.
type streamTable struct {
	mu     sync.Mutex
	m      map[clientKey]*streamConn
	closed bool // the server is closing: no more connections
}

// add enters sc; false once the server is closing.
func (t *streamTable) add(sc *streamConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.m == nil {
		t.m = map[clientKey]*streamConn{}
	}
	t.m[sc.tuple] = sc
	return true
}

func (t *streamTable) remove(sc *streamConn) {
	t.mu.Lock()
	if t.m[sc.tuple] == sc {
		delete(t.m, sc.tuple)
	}
	t.mu.Unlock()
}

func (t *streamTable) get(client, local netip.AddrPort) *streamConn {
	t.mu.Lock()
	sc := t.m[clientKey{client, local}]
	t.mu.Unlock()
	return sc
}

// close takes no more connections and returns the ones in the table.
func (t *streamTable) close() []*streamConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	out := make([]*streamConn, 0, len(t.m))
	for _, sc := range t.m {
		out = append(out, sc)
	}
	return out
}

func (t *streamTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// endStreams closes every TCP and TLS client's connection and waits, up to
// limit, until each one's goroutine has ended its allocation (it closes the
// streamConn last, which takes it out of the table).
func (s *Server) endStreams(limit time.Duration) {
	for _, sc := range s.streams.close() {
		_ = sc.raw.Close()
	}
	deadline := time.Now().Add(limit)
	for s.streams.count() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}
