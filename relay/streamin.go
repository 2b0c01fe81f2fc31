package relay

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/traverse/traverse/relay/internal/frames"
)

// How a TCP or TLS client's own data reaches its peer. Each stream
// connection is read by a goroutine of its own (serveStream);
// streamConn.Read cuts the byte stream into frames and relays what it can on
// the spot, in that goroutine:
//
//   - ChannelData on a channel of the connection's allocation, and Send
//     indications to a permitted peer, go straight to the relay socket under
//     the same rules as a UDP client's (admit);
//   - everything else — every request, and anything before the allocation
//     exists — is returned to the control plane one whole frame at a time.
//
// The way back (peers' data to the client) is streamout.go.

// streamReadBuffer holds what one read from a client's connection returns.
// A frame longer than it is passed over.
const streamReadBuffer = 4096

// deadlineSlack is how far an allocated connection's idle deadline may lag
// before it is pushed forward: moving a deadline costs a timer update, too
// much to pay per frame.
const deadlineSlack = time.Second

// Read returns the next frame for the control plane. The frames the data
// path relays itself never leave it.
func (c *streamConn) Read(b []byte) (int, error) {
	for {
		n, ok, err := c.nextForPion(b)
		if ok || err != nil {
			return n, err
		}
		// Counted before waiting, so the counters are never behind what
		// a peer has seen: one set of metric adds per read, not per frame.
		c.count.flush(c.s.metrics)
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// fill reads more of the stream into the buffer, under the connection's
// deadline: the unauthenticated one until it allocates, then the idle one.
func (c *streamConn) fill() error {
	if c.rpos == c.rend {
		c.rpos, c.rend = 0, 0
	} else if c.rpos > 0 {
		c.rend = copy(c.rbuf, c.rbuf[c.rpos:c.rend])
		c.rpos = 0
	}
	if c.rend == len(c.rbuf) {
		// Cannot happen: a frame longer than the buffer is passed over.
		// Were it to, reading nothing forever would be worse than closing.
		return frames.ErrNotFrame
	}
	deadline := c.accepted.Add(c.authWait)
	if c.relay.Load() != nil || c.s.allocs.has(c.key) {
		// Allocated: it counts against the quotas now, not its source's
		// pending connections.
		c.unpended.Do(c.unpend)
		deadline = time.Now().Add(idleTimeout)
	}
	if d := deadline.Sub(c.deadline); d < 0 || d > deadlineSlack {
		_ = c.Conn.SetReadDeadline(deadline)
		c.deadline = deadline
	}
	n, err := c.Conn.Read(c.rbuf[c.rend:])
	c.rend += n
	if n > 0 {
		return nil
	}
	return err
}

// nextForPion relays the buffered frames it can and copies the first one it
// cannot into b. ok is false when the buffer holds no whole frame for the
// control plane.
func (c *streamConn) nextForPion(b []byte) (n int, ok bool, err error) {
	for {
		if c.skip > 0 {
			k := min(c.skip, c.rend-c.rpos)
			c.skip -= k
			c.rpos += k
			if c.skip > 0 {
				return 0, false, nil
			}
		}
		avail := c.rbuf[c.rpos:c.rend]
		size, channel, err := frames.StreamSize(avail)
		if err != nil || size == 0 {
			return 0, false, err
		}
		if size > len(c.rbuf) {
			c.s.metrics.oversized.Inc()
			c.skip = size
			continue
		}
		if size > len(avail) {
			return 0, false, nil
		}
		frame := avail[:size]
		c.rpos += size
		if channel {
			if c.channelData(frame) {
				continue
			}
		} else if c.stun(frame) {
			continue
		}
		if size > len(b) { // dropped unread
			c.s.metrics.oversized.Inc()
			continue
		}
		return copy(b, frame), true, nil
	}
}

// channelData relays ChannelData on one of the allocation's channels; false
// leaves the frame to the control plane (no allocation yet).
func (c *streamConn) channelData(f []byte) bool {
	rc := c.relay.Load()
	if rc == nil {
		return false
	}
	data, ch, ok := rc.routes.Load().channelData(f)
	if !ok {
		c.s.metrics.unroutable.Inc()
		return true
	}
	if rc.admit(data, ch.peer, &c.count) {
		_ = rc.send(data, &ch.sa)
	}
	return true
}

// stun relays a Send indication to a permitted peer; false leaves the frame
// to the control plane.
func (c *streamConn) stun(f []byte) bool {
	if frames.STUNType(f) != frames.TypeSendIndication {
		return false
	}
	rc := c.relay.Load()
	if rc == nil {
		return false
	}
	peer, data, sa, ok := rc.sendTarget(f)
	if !ok {
		return false // malformed: the control plane drops it
	}
	if sa.Valid() && rc.admit(data, peer, &c.count) {
		_ = rc.send(data, &sa)
	}
	return true
}

// rawReadConn reads a TCP connection with a raw system call, waiting for
// data in Go's netpoller as its own Read does. Go's Read enters the
// runtime's system-call state, and the first such call after the process
// went idle wakes the runtime's monitor thread (sysmon), which then polls
// every 20 µs for a millisecond: at a media rate, where the relay goes idle
// between most packets, perf showed that monitor's sleeps costing a tenth
// of the relay's CPU over TCP. The UDP data path avoids it the same way
// (relay/internal/sockio).
type rawReadConn struct {
	net.Conn
	raw syscall.RawConn
	// The read's argument and results: a method value made once, so a
	// read allocates nothing. Only the connection's reader uses them.
	buf    []byte
	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
}

// newRawReadConn wraps c, or returns it as it is when it has no descriptor.
func newRawReadConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawReadConn{Conn: c, raw: raw}
	r.readFn = r.readRaw
	return r
}

func (r *rawReadConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.buf = p
	err := r.raw.Read(r.readFn) // deadlines apply as to Read
	r.buf = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, os.NewSyscallError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// readRaw reads once; false (nothing there yet) makes the netpoller wait.
func (r *rawReadConn) readRaw(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			r.n, r.errno = int(n), 0
		default:
			r.n, r.errno = 0, e
		}
		return true
	}
}
