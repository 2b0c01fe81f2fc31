package relay

import (
	"net"
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
	perms    routeSet[netip.Addr, struct{}]   // permitted peer IPs
}

// noRoutes is every relay socket's routes until pion reports its client.
var noRoutes = &relayRoutes{}

type channelRoute struct {
	peer netip.AddrPort
	sa   sockio.Sockaddr
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

// update applies f to a copy of the routes and publishes it.
func (c *relayConn) update(f func(r *relayRoutes)) {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	r := *c.routes.Load()
	f(&r)
	c.routes.Store(&r)
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

// relayConnAt finds the relay socket pion reports by its relayed address.
func (s *Server) relayConnAt(relayAddr net.Addr) *relayConn {
	if relayAddr == nil {
		return nil
	}
	s.relaysMu.Lock()
	rc := s.relays[addrPort(relayAddr)]
	s.relaysMu.Unlock()
	return rc
}

// clientStream reports whether a client reached us over TCP or TLS. pion v4
// labels every allocation's protocol "UDP", stream clients' included, so the
// label cannot be trusted; the client's address can: pion hands us the
// connection's RemoteAddr, a *net.TCPAddr, for a stream client.
func clientStream(src net.Addr) bool {
	_, ok := src.(*net.TCPAddr)
	return ok
}

// routeClient records a new allocation's client, so the data path relays
// peers' data to it: as datagrams from the UDP listener socket for a UDP
// client, through the connection's send queue for a TCP or TLS one.
func (s *Server) routeClient(src, dst net.Addr, relayAddr net.Addr) {
	rc := s.relayConnAt(relayAddr)
	if rc == nil {
		return
	}
	client, local := addrPort(src), addrPort(dst)
	if clientStream(src) {
		sc := s.streams.get(client, local)
		if sc == nil {
			// Not one of our connections: leave it to pion.
			rc.inboxFor(relayInboxStream)
			return
		}
		rc.inboxFor(relayInboxUDP)
		rc.update(func(r *relayRoutes) { r.stream = sc })
		sc.relay.Store(rc)
		return
	}
	rc.inboxFor(relayInboxUDP)
	out := s.listenerSocket(local, rc.sh.index)
	if out == nil {
		return
	}
	rc.update(func(r *relayRoutes) {
		r.out, r.client, r.clientAP, r.localAP = out, sockio.MakeSockaddr(client, out.V6()), client, local
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

func (s *Server) onPermissionCreated(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	s.metrics.permissionsActive.Inc()
	s.setPermission(relayAddr, peer, true)
}

func (s *Server) onPermissionDeleted(_, _ net.Addr, _, _, _ string, relayAddr net.Addr, peer net.IP) {
	s.metrics.permissionsActive.Dec()
	s.setPermission(relayAddr, peer, false)
}

func (s *Server) onChannelCreated(_, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, number uint16) {
	s.metrics.channelsActive.Inc()
	s.setChannel(relayAddr, peer, number, true)
}

func (s *Server) onChannelDeleted(_, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, number uint16) {
	s.metrics.channelsActive.Dec()
	s.setChannel(relayAddr, peer, number, false)
}

// setPermission adds or removes a permitted peer IP in the routes of the
// relay socket pion reports by relayAddr.
func (s *Server) setPermission(relayAddr net.Addr, peer net.IP, on bool) {
	ip, ok := netip.AddrFromSlice(peer)
	rc := s.relayConnAt(relayAddr)
	if !ok || rc == nil {
		return
	}
	rc.update(func(r *relayRoutes) {
		if on {
			r.perms = r.perms.with(ip.Unmap(), struct{}{})
		} else {
			r.perms = r.perms.without(ip.Unmap())
		}
	})
}

// setChannel adds or removes a channel in the routes of the relay socket
// pion reports by relayAddr.
func (s *Server) setChannel(relayAddr, peer net.Addr, number uint16, on bool) {
	rc := s.relayConnAt(relayAddr)
	if rc == nil {
		return
	}
	ap := addrPort(peer)
	rc.update(func(r *relayRoutes) {
		if !on {
			r.channels = r.channels.without(number)
			if n, ok := r.byPeer.get(ap); ok && n == number {
				r.byPeer = r.byPeer.without(ap)
			}
			return
		}
		r.channels = r.channels.with(number, channelRoute{peer: ap, sa: sockio.MakeSockaddr(ap, rc.sock.V6())})
		r.byPeer = r.byPeer.with(ap, number)
	})
}
