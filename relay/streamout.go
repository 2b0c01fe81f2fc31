package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// How a stream (TCP or TLS) client's send queue is bounded. Variables so
// that a test can lower them; a Server copies them when it starts.
var (
	// streamQueueBytes caps what may wait for a stream client: peers' data
	// beyond it is dropped and counted (a full socket buffer would drop a
	// UDP client's the same way). pion's answers may use twice as much, so
	// a burst of media never crowds out a ChannelBind or Refresh answer.
	streamQueueBytes = 256 << 10
	// streamWriteTimeout closes a client that has taken nothing for this
	// long while data waited for it: it is stalled or gone, and its
	// allocation should not hold a relay port and a queue until it expires.
	streamWriteTimeout = 10 * time.Second
)

// streamKeep is the largest buffer a writer keeps between bursts; a larger
// one, grown by a burst, is let go.
const streamKeep = 64 << 10

// streamOut is a stream client's send queue. pion's answers (Write) and
// peers' data framed by the data path (queueData) are appended to it, and
// one goroutine per connection writes it out. So neither pion's read loop
// nor a data-path shard ever waits on a client's TCP window, one stalled
// client holds up no other, and what a shard queued in one wake-up leaves
// in one write on TCP.
type streamOut struct {
	conn    net.Conn // what the writer writes to (the TLS layer for turns:)
	m       *metrics
	limit   int           // streamQueueBytes
	timeout time.Duration // streamWriteTimeout

	// records: write each message in a TLS record of its own. coturn's
	// turnutils_uclient reads one message per record and drops the rest of
	// a record that holds several (measured: 256 of 300 lost); a TCP stream
	// has no records, so its messages are written together.
	records bool

	mu      sync.Mutex
	pending []byte
	ends    []int // for records: where each message in pending ends
	closed  bool
	wake    chan struct{} // one slot: the writer has something to do
	done    chan struct{} // closed when the writer has returned
	// fail ends the connection after a failed or timed-out write.
	fail func()
}

func newStreamOut(conn net.Conn, records bool, s *Server, fail func()) *streamOut {
	o := &streamOut{conn: conn, records: records, m: s.metrics, limit: s.streamQueueBytes, timeout: s.streamWriteTimeout, fail: fail,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go o.run()
	return o
}

// queue appends p for the writer. limit is the most that may then be
// waiting; false means p was dropped (or the connection is closed).
func (o *streamOut) queue(p []byte, limit int) bool {
	o.mu.Lock()
	if o.closed || len(o.pending)+len(p) > limit {
		o.mu.Unlock()
		return false
	}
	o.pending = append(o.pending, p...)
	if o.records {
		o.ends = append(o.ends, len(o.pending))
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	o.mu.Unlock()
	return true
}

// queueData queues a framed ChannelData message or Data indication from a
// peer, counting a drop when the client is too far behind.
func (o *streamOut) queueData(p []byte) {
	if !o.queue(p, o.limit) {
		o.m.streamQueueFull.Inc()
	}
}

// queueAnswer queues one of pion's messages to the client.
func (o *streamOut) queueAnswer(p []byte) error {
	if o.queue(p, 2*o.limit) {
		return nil
	}
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return net.ErrClosed
	}
	o.m.streamQueueFull.Inc()
	return nil // dropped as a full buffer drops; the write timeout ends a stalled client
}

// run writes whatever is pending, each time the queue wakes it, until the
// connection closes or a write fails.
func (o *streamOut) run() {
	defer close(o.done)
	var buf []byte
	var ends []int
	for range o.wake {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return
		}
		buf, o.pending = o.pending, buf[:0]
		ends, o.ends = o.ends, ends[:0]
		o.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		_ = o.conn.SetWriteDeadline(time.Now().Add(o.timeout))
		if err := o.write(buf, ends); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				o.m.streamWriteTimeouts.Inc()
			}
			o.fail()
			return
		}
		if cap(buf) > streamKeep {
			buf, ends = nil, nil
		}
	}
}

// write sends buf: at once on TCP, one message per record on TLS.
func (o *streamOut) write(buf []byte, ends []int) error {
	if !o.records {
		_, err := o.conn.Write(buf)
		return err
	}
	start := 0
	for _, end := range ends {
		if _, err := o.conn.Write(buf[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
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

// streamTable finds a stream client's connection by its 5-tuple (client
// and listener address), so that the data path can write peers' data to it.
type streamTable struct {
	mu sync.Mutex
	m  map[clientKey]*streamConn
}

func (t *streamTable) add(sc *streamConn) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[clientKey]*streamConn{}
	}
	t.m[sc.tuple] = sc
	t.mu.Unlock()
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
