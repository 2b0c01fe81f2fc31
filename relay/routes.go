package relay

import (
	"net/netip"
	"sync"

	"github.com/traverse/traverse/relay/internal/frames"
	"github.com/traverse/traverse/relay/internal/sockio"
)

// relayRoutes is what the data path knows of one allocation: where its UDP
// client is, and its channels and permissions. It is immutable; the event
// handlers below swap in an updated copy, so the data path reads it with one
// atomic load. Allocations have a handful of channels and permissions, so
// the copies are small and rare next to the datagrams.
type relayRoutes struct {
	// out and client are set for a client on a UDP listener: the data path
	// sends peers' datagrams to client from out.
	out      *sockio.UDPSocket
	client   sockio.Sockaddr
	clientAP netip.AddrPort
	localAP  netip.AddrPort
	// stream is set for a TCP or TLS client: the data path queues peers'
	// data on its connection. With neither out nor stream, pion relays.
	stream *streamConn

	channels routeSet[uint16, channelRoute]   // by channel number
	byPeer   routeSet[netip.AddrPort, uint16] // channel number by peer
	perms    routeSet[netip.Addr, int64]      // permitted peer IPs, until a monoNow
}

// noRoutes is every relay socket's routes until pion reports its client.
var noRoutes = &relayRoutes{}

type channelRoute struct {
	peer  netip.AddrPort
	sa    sockio.Sockaddr
	until int64 // monoNow when it expires unless refreshed
}

// channelData returns the payload of a client's ChannelData message p and
// its channel's route; false when the allocation has no such channel.
func (r *relayRoutes) channelData(p []byte) ([]byte, channelRoute, bool) {
	ch, ok := r.channels.get(uint16(p[0])<<8 | uint16(p[1]))
	if !ok {
		return nil, ch, false
	}
	length := int(uint16(p[2])<<8 | uint16(p[3]))
	return p[4 : 4+length], ch, true
}

// sendTarget parses a client's Send indication p; ok is false for one it
// cannot parse, which pion then refuses. A peer without a permission comes
// back with an empty sa, counted as unroutable.
func (c *relayConn) sendTarget(p []byte) (peer netip.AddrPort, data []byte, sa sockio.Sockaddr, ok bool) {
	peer, data, ok = frames.ParseSendIndication(p)
	if !ok {
		return peer, nil, sa, false
	}
	if _, permitted := c.routes.Load().perms.get(peer.Addr()); !permitted {
		c.s.metrics.unroutable.Inc()
		return peer, nil, sa, true
	}
	return peer, data, sockio.MakeSockaddr(peer, c.sock.V6()), true
}

// update applies f to a copy of the routes and publishes it; false once the
// relay socket is closed.
func (c *relayConn) update(f func(r *relayRoutes)) bool {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	if c.gone {
		return false
	}
	r := *c.routes.Load()
	f(&r)
	c.routes.Store(&r)
	return true
}

// clientKey names a UDP allocation by its 5-tuple: the client's address and
// the listener address it talks to.
type clientKey struct {
	client, local netip.AddrPort
}

// routeTable maps each UDP allocation's 5-tuple to its relay socket, for the
// client -> peer direction.
type routeTable struct {
	mu sync.RWMutex
	m  map[clientKey]*relayConn
}

// route returns the relay socket of the UDP allocation of client on local.
func (s *Server) route(client, local netip.AddrPort) *relayConn {
	s.routes.mu.RLock()
	rc := s.routes.m[clientKey{client, local}]
	s.routes.mu.RUnlock()
	return rc
}

func (s *Server) unroute(client, local netip.AddrPort, rc *relayConn) {
	s.routes.mu.Lock()
	k := clientKey{client, local}
	if s.routes.m[k] == rc {
		delete(s.routes.m, k)
	}
	s.routes.mu.Unlock()
}

// routeClient records a new allocation's client, so the data path relays
// peers' data to it: as datagrams from the UDP listener socket for a UDP
// client, through the connection's send queue for a TCP or TLS one.
func (s *Server) routeClient(rc *relayConn, r *request) {
	if sc := r.stream; sc != nil {
		rc.update(func(rt *relayRoutes) { rt.stream = sc })
		sc.relay.Store(rc)
		return
	}
	client, local := addrPort(r.src), addrPort(r.local)
	out := s.listenerSocket(local, rc.sh.index)
	if out == nil {
		return
	}
	rc.update(func(rt *relayRoutes) {
		rt.out, rt.client, rt.clientAP, rt.localAP = out, sockio.MakeSockaddr(client, out.V6()), client, local
	})
	s.routes.mu.Lock()
	s.routes.m[clientKey{client, local}] = rc
	s.routes.mu.Unlock()
}

// listenerSocket picks a socket bound to local to send to clients from: any
// of a SO_REUSEPORT group sends from the same address; the shard's own one
// keeps the work on one core.
func (s *Server) listenerSocket(local netip.AddrPort, shard int) *sockio.UDPSocket {
	group := s.udpGroups[local]
	if len(group) == 0 {
		return nil
	}
	return group[shard%len(group)].sock
}

// permit installs or refreshes a permission for peer IP ip until the
// monotonic time until (monoNow).
func (c *relayConn) permit(ip netip.Addr, until int64) {
	added := false
	if c.update(func(r *relayRoutes) {
		_, had := r.perms.get(ip)
		r.perms, added = r.perms.with(ip, until), !had
	}) && added {
		c.s.metrics.permissionsActive.Inc()
	}
}

// bind installs or refreshes channel number to peer until the monotonic
// time until; false when the number is bound to another peer or the peer to
// another number (RFC 8656 § 11.2).
func (c *relayConn) bind(number uint16, peer netip.AddrPort, until int64) bool {
	ok, added := true, false
	c.update(func(r *relayRoutes) {
		ch, had := r.channels.get(number)
		n, peerHad := r.byPeer.get(peer)
		if (had && ch.peer != peer) || (peerHad && n != number) {
			ok = false
			return
		}
		r.channels = r.channels.with(number, channelRoute{peer: peer, sa: sockio.MakeSockaddr(peer, c.sock.V6()), until: until})
		r.byPeer = r.byPeer.with(peer, number)
		added = !had
	})
	if added {
		c.s.metrics.channelsActive.Inc()
	}
	return ok
}

// expire removes the permissions and channels whose time ran out by now.
func (c *relayConn) expire(now int64) {
	rt := c.routes.Load()
	if !rt.anyExpired(now) {
		return
	}
	var perms, chans int
	c.update(func(r *relayRoutes) {
		perms, chans = 0, 0
		for ip, until := range r.perms.all() {
			if until <= now {
				r.perms = r.perms.without(ip)
				perms++
			}
		}
		for number, ch := range r.channels.all() {
			if ch.until <= now {
				r.channels = r.channels.without(number)
				r.byPeer = r.byPeer.without(ch.peer)
				chans++
			}
		}
	})
	c.s.metrics.permissionsActive.Sub(float64(perms))
	c.s.metrics.channelsActive.Sub(float64(chans))
}

// anyExpired reports whether a permission or channel ran out by now.
func (r *relayRoutes) anyExpired(now int64) bool {
	for _, until := range r.perms.all() {
		if until <= now {
			return true
		}
	}
	for _, ch := range r.channels.all() {
		if ch.until <= now {
			return true
		}
	}
	return false
}
