package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/traverse/traverse/relay/internal/sockio"
)

// relaySocketBuffer is the receive buffer asked for on each relay socket:
// a peer's burst (a video key frame, ~200 full-size datagrams) fits, and
// 10,000 allocations cannot pin gigabytes of kernel memory behind a stalled
// shard (see listenerSocketBuffer for why deeper is not better).
const relaySocketBuffer = 256 << 10

// allocateRelay binds a relay socket on relay.bind_ip within the port
// range (an even port if even, RFC 8656 § 7.2 EVEN-PORT) and registers it
// with a data-path shard.
func (s *Server) allocateRelay(even bool) (*relayConn, error) {
	lo, hi := s.ports.Min, s.ports.Max
	lastErr := errors.New("all in use")
	var odd []int // ports passed over for EVEN-PORT, given back after
	defer func() {
		for _, p := range odd {
			s.portPool.Put(p)
		}
	}()
	for tries := 0; tries < 64; {
		port, ok := s.portPool.Get()
		if !ok {
			break
		}
		if even && port%2 == 1 {
			odd = append(odd, port)
			continue
		}
		tries++
		// Room for a burst from the peer: kernel memory, used only when filled.
		sock, err := sockio.Open("udp4", s.bindIP, port, false, relaySocketBuffer, 0)
		if err == nil {
			rc, err := s.newRelayConn(sock)
			if err == nil {
				return rc, nil
			}
			_ = sock.Close()
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			s.portPool.Put(port) // failing for another reason: back to the end
			break
		}
		s.portPool.PutBusy(port) // another socket holds it: try the next
	}
	return nil, fmt.Errorf("no free relay port in %d-%d: %w", lo, hi, lastErr)
}

// relayConn is one allocation's relay socket, polled by a data-path shard,
// which relays peers' datagrams to the client (readable). A client's own
// data reaches it from a shard (a UDP client, queueToPeer) or from the
// client's connection (TCP or TLS, streamin.go), under the same rules
// (admit).
type relayConn struct {
	s          *Server
	sock       *sockio.UDPSocket
	sh         *shard
	id         uint64 // the shard's registration
	advertised *net.UDPAddr
	key        netip.AddrPort // advertised address
	up, down   *rate.Limiter

	// routes is what the data path relays by, kept by the control plane.
	routes   atomic.Pointer[relayRoutes]
	routesMu sync.Mutex // serialises the copy-on-write updates
	gone     bool       // closed: no more updates (under routesMu)

	// traffic counts what this allocation relayed; only atomic adds on the
	// data path, read by Allocations.
	traffic counters

	// The last peer checked against the policy, so that a datagram to the
	// same peer costs no policy walk.
	mu       sync.Mutex
	lastPeer netip.AddrPort
	lastGen  uint64
	lastOK   bool
	closeErr error
	closed   sync.Once
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
	return rc, nil
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

// Close releases the socket and its routes, and takes its permissions and
// channels off the gauges.
func (c *relayConn) Close() error {
	c.closed.Do(func() {
		c.routesMu.Lock()
		c.gone = true
		rt := c.routes.Load()
		c.routesMu.Unlock()
		c.s.metrics.permissionsActive.Sub(float64(rt.perms.len()))
		c.s.metrics.channelsActive.Sub(float64(rt.channels.len()))
		if rt.out != nil {
			c.s.unroute(rt.clientAP, rt.localAP, c)
		} else if rt.stream != nil {
			rt.stream.relay.CompareAndSwap(c, nil)
		}
		c.closeErr = c.sock.Close()
		c.sh.forget(c.id)
		c.s.portPool.Put(c.sock.LocalAddr().Port)
	})
	return c.closeErr
}
