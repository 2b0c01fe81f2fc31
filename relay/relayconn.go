package relay

import (
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/traverse/traverse/relay/internal/sockio"
)

// relaySocketBuffer is the receive buffer asked for on each relay socket.
const relaySocketBuffer = 1 << 20

var errTCPRelayUnsupported = errors.New("TCP relay allocations (RFC 6062) are not supported")

// addressGenerator is the RelayAddressGenerator we hand pion: it binds relay
// sockets on relay.bind_ip within the port range, advertises relay.public_ip,
// and returns our relayConn so that we count, cap and police every datagram.
type addressGenerator struct{ s *Server }

func (g addressGenerator) Validate() error { return nil }

func (g addressGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelayUnsupported
}

func (g addressGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	s := g.s
	lo, hi := s.ports.Min, s.ports.Max
	try := func(port int) (net.PacketConn, net.Addr, error) {
		// Room for a burst from the peer: kernel memory, used only when filled.
		sock, err := sockio.Open(network, s.bindIP, port, false, relaySocketBuffer, 0)
		if err != nil {
			return nil, nil, err
		}
		rc, err := s.newRelayConn(sock)
		if err != nil {
			_ = sock.Close()
			return nil, nil, err
		}
		return rc, rc.advertised, nil
	}
	if requestedPort != 0 {
		if requestedPort < lo || requestedPort > hi {
			return nil, nil, fmt.Errorf("requested port %d outside relay range %d-%d", requestedPort, lo, hi)
		}
		return try(requestedPort)
	}
	lastErr := errors.New("all in use")
	for i := 0; i < 64; i++ {
		port, ok := s.portPool.Get()
		if !ok {
			break
		}
		c, a, err := try(port)
		if err == nil {
			return c, a, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			s.portPool.Put(port) // failing for another reason: back to the end
			break
		}
		s.portPool.PutBusy(port) // another socket holds it: try the next

	}
	return nil, nil, fmt.Errorf("no free relay port in %d-%d: %w", lo, hi, lastErr)
}

// relayConn is one allocation's relay socket, polled by a data-path shard.
// To a UDP client the shard relays peers' datagrams itself; for a TCP or TLS
// client it hands them to pion through the inbox (ReadFrom: peer -> client).
// pion writes to it what a TCP or TLS client sends (WriteTo: client ->
// peer); the shard does the same for a UDP client (queueToPeer), with the same rules (admit).
type relayConn struct {
	s          *Server
	sock       *sockio.UDPSocket
	sh         *shard
	id         uint64 // the shard's registration
	advertised *net.UDPAddr
	key        netip.AddrPort // advertised address, as pion reports it in events
	up, down   *rate.Limiter
	// inbox is made when pion reports the allocation, sized for its
	// client: UDP clients' data never goes through it.
	inbox atomic.Pointer[inbox]

	// routes is what the data path relays by, kept from pion's events.
	routes   atomic.Pointer[relayRoutes]
	routesMu sync.Mutex // serialises the copy-on-write updates

	// traffic counts what this allocation relayed; only atomic adds on the
	// data path, read by Allocations.
	traffic counters

	// The shard's last peer address handed to pion.
	lastSrc   *net.UDPAddr
	lastSrcAP netip.AddrPort

	// The last peer checked against the policy, so that a datagram to the
	// same peer costs no policy walk.
	mu       sync.Mutex
	lastPeer netip.AddrPort
	lastGen  uint64
	lastOK   bool
	closeErr error
	closed   sync.Once
}

// How many peer datagrams may wait for pion's read loop: a TCP or TLS
// client's all go that way; a UDP client's never do.
const (
	relayInboxStream = 64
	relayInboxUDP    = 1
)

// closedInbox stands in for the inbox of a relay socket closed before pion
// reported its allocation.
var closedInbox = func() *inbox {
	q := newInbox(0, prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"}))
	q.close()
	return q
}()

// inboxFor returns the relay socket's inbox, making it with room for size
// datagrams if there is none yet.
func (c *relayConn) inboxFor(size int) *inbox {
	if q := c.inbox.Load(); q != nil {
		return q
	}
	c.inbox.CompareAndSwap(nil, newInbox(size, c.s.metrics.inboxDrops))
	return c.inbox.Load()
}

func (s *Server) newRelayConn(sock *sockio.UDPSocket) (*relayConn, error) {
	rc := &relayConn{s: s, sock: sock, advertised: &net.UDPAddr{IP: s.publicIP, Port: sock.LocalAddr().Port}}
	rc.key = addrPort(rc.advertised)
	rc.routes.Store(noRoutes)
	if bw := s.state.Load().bandwidth; bw > 0 {
		// A burst of a quarter second, at least one full datagram.
		burst := max(int(bw/4), 1600)
		rc.up = rate.NewLimiter(rate.Limit(bw), burst)
		rc.down = rate.NewLimiter(rate.Limit(bw), burst)
	}
	rc.sh = s.nextShard()
	id, err := rc.sh.add(sock, rc)
	if err != nil {
		return nil, err
	}
	rc.id = id
	s.relaysMu.Lock()
	s.relays[rc.key] = rc
	s.relaysMu.Unlock()
	return rc, nil
}

// ReadFrom returns the next datagram from a peer that the data path left to
// pion. pion reports the allocation (routeClient makes the inbox) before it
// starts reading; the stream size is a fallback.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	return c.inboxFor(relayInboxStream).read(p)
}

// fromPeer applies the bandwidth cap and the counters to an n-byte datagram
// from a peer; false means drop it.
func (c *relayConn) fromPeer(n int, t *tally) bool {
	if c.down != nil && !c.down.AllowN(time.Now(), n) {
		c.s.metrics.droppedFromPeer.Inc()
		return false
	}
	t.fromPeer++
	t.fromPeerBytes += n
	c.traffic.received(n)
	return true
}

// WriteTo sends a client's datagram to a peer, under the same rules as the
// data path (admit).
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("relay: unexpected peer address type %T", addr)
	}
	peer := ua.AddrPort()
	sa := sockio.MakeSockaddr(peer, c.sock.V6())
	var t tally
	if !c.admit(p, peer, &t) {
		return len(p), nil // dropped by policy or cap: UDP promises no more
	}
	t.flush(c.s.metrics) // counted before sent, as on the data path
	if err := c.send(p, &sa); err != nil {
		return 0, err
	}
	return len(p), nil
}

// send sends an admitted datagram to a peer at once.
func (c *relayConn) send(p []byte, sa *sockio.Sockaddr) error {
	if err := c.sock.SendTo(p, sa); err != nil {
		c.s.metrics.sendErrors.Inc()
		return err
	}
	return nil
}

// admit applies the peer policy (as it stands after any reload), the
// bandwidth cap and the counters to a client's datagram for a peer; false
// means drop it, which is not an error: UDP gives no guarantee anyway.
func (c *relayConn) admit(p []byte, peer netip.AddrPort, t *tally) bool {
	if !c.peerAllowed(peer) {
		return false
	}
	if c.up != nil && !c.up.AllowN(time.Now(), len(p)) {
		c.s.metrics.droppedToPeer.Inc()
		return false
	}
	t.toPeer++
	t.toPeerBytes += len(p)
	c.traffic.sent(len(p))
	return true
}

func (c *relayConn) peerAllowed(ap netip.AddrPort) bool {
	st := c.s.state.Load()
	c.mu.Lock()
	if ap == c.lastPeer && st.gen == c.lastGen {
		ok := c.lastOK
		c.mu.Unlock()
		return ok
	}
	ok, why := st.peers.AllowAddr(ap)
	c.lastPeer, c.lastGen, c.lastOK = ap, st.gen, ok
	c.mu.Unlock()
	if !ok {
		c.s.metrics.peerDenied.WithLabelValues(why).Inc()
	}
	return ok
}

func (c *relayConn) LocalAddr() net.Addr { return c.sock.LocalAddr() }

// Deadlines are not used by pion on relay sockets; reads end with Close.
func (c *relayConn) SetDeadline(time.Time) error      { return nil }
func (c *relayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *relayConn) SetWriteDeadline(time.Time) error { return nil }

// Close releases the socket; pion then deletes the allocation if it has not
// already.
func (c *relayConn) Close() error {
	c.closed.Do(func() {
		c.s.relaysMu.Lock()
		if c.s.relays[c.key] == c {
			delete(c.s.relays, c.key)
		}
		c.s.relaysMu.Unlock()
		if rt := c.routes.Load(); rt.out != nil {
			c.s.unroute(rt.clientAP, rt.localAP, c)
		} else if rt.stream != nil {
			rt.stream.relay.CompareAndSwap(c, nil)
		}
		c.inbox.CompareAndSwap(nil, closedInbox)
		c.inbox.Load().close()
		c.closeErr = c.sock.Close()
		c.sh.forget(c.id)
		c.s.portPool.Put(c.sock.LocalAddr().Port)
	})
	return c.closeErr
}
