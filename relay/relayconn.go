package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
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
		conn, err := net.ListenUDP(network, &net.UDPAddr{IP: s.bindIP, Port: port})
		if err != nil {
			return nil, nil, err
		}
		// Room for a burst from the peer: kernel memory, used only when filled.
		_ = conn.SetReadBuffer(relaySocketBuffer)
		rc, err := s.newRelayConn(conn)
		if err != nil {
			_ = conn.Close()
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
	var lastErr error
	for i := 0; i < 64; i++ {
		c, a, err := try(lo + rand.IntN(hi-lo+1))
		if err == nil {
			return c, a, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, fmt.Errorf("no free relay port in %d-%d: %w", lo, hi, lastErr)
}

// relayConn is one allocation's relay socket. pion reads from it what peers
// send (ReadFrom: peer -> client) and writes to it what the client sends
// (WriteTo: client -> peer).
type relayConn struct {
	*net.UDPConn
	raw        *rawSocket
	s          *Server
	advertised *net.UDPAddr
	key        string // advertised address, as pion reports it in events
	up, down   *rate.Limiter

	// The last peer checked against the policy, so that a datagram to the
	// same peer costs no policy walk.
	mu       sync.Mutex
	lastPeer netip.AddrPort
	lastGen  uint64
	lastOK   bool
	closeErr error
	closed   sync.Once
}

func (s *Server) newRelayConn(c *net.UDPConn) (*relayConn, error) {
	raw, err := newRawSocket(c)
	if err != nil {
		return nil, err
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	rc := &relayConn{UDPConn: c, raw: raw, s: s, advertised: &net.UDPAddr{IP: s.publicIP, Port: port}}
	rc.key = rc.advertised.String()
	if bw := s.state.Load().bandwidth; bw > 0 {
		// A burst of a quarter second, at least one full datagram.
		burst := max(int(bw/4), 1600)
		rc.up = rate.NewLimiter(rate.Limit(bw), burst)
		rc.down = rate.NewLimiter(rate.Limit(bw), burst)
	}
	s.relaysMu.Lock()
	s.relays[rc.key] = rc
	s.relaysMu.Unlock()
	return rc, nil
}

// ReadFrom returns the next datagram from a peer that the bandwidth cap lets
// through.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.raw.readFrom(p)
		if err != nil {
			return n, addr, err
		}
		if c.down != nil && !c.down.AllowN(time.Now(), n) {
			c.s.metrics.droppedFromPeer.Inc()
			continue
		}
		c.s.metrics.packetsFromPeer.Inc()
		c.s.metrics.bytesFromPeer.Add(float64(n))
		return n, addr, nil
	}
}

// WriteTo sends a client's datagram to a peer, unless the peer policy (as it
// stands after any reload) or the bandwidth cap says no. A dropped datagram
// is reported as sent: UDP gives no such guarantee anyway.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("relay: unexpected peer address type %T", addr)
	}
	if !c.peerAllowed(ua.AddrPort()) {
		return len(p), nil
	}
	if c.up != nil && !c.up.AllowN(time.Now(), len(p)) {
		c.s.metrics.droppedToPeer.Inc()
		return len(p), nil
	}
	n, err := c.raw.writeTo(p, ua)
	if err == nil {
		c.s.metrics.packetsToPeer.Inc()
		c.s.metrics.bytesToPeer.Add(float64(n))
	}
	return n, err
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

// Close releases the socket; pion then deletes the allocation if it has not
// already.
func (c *relayConn) Close() error {
	c.closed.Do(func() {
		c.s.relaysMu.Lock()
		if c.s.relays[c.key] == c {
			delete(c.s.relays, c.key)
		}
		c.s.relaysMu.Unlock()
		c.closeErr = c.UDPConn.Close()
	})
	return c.closeErr
}
