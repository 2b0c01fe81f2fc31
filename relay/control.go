package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/relay/internal/frames"
)

// The control plane: TURN's requests (RFC 8656) — Allocate, Refresh,
// CreatePermission, ChannelBind, and Binding over TCP/TLS — and the
// allocations they make. The data path (datapath.go, streamin.go) relays
// media and hands everything else here: a UDP listener's control loop reads
// its inbox, a TCP or TLS connection's reader calls control itself.
//
// Why not pion/turn's server: each allocation it holds costs a goroutine
// blocked on the relay socket (a 2 KB stack and a 1,600-byte buffer), a
// permission map made for 64 peers (about 4 KB) and a timer per allocation,
// permission and channel: two thirds of a held allocation's memory, for
// state that the data path keeps again in its own routes. Here an
// allocation is its table entry and its relay socket; lifetimes are
// deadlines that one loop sweeps each second (sweepLifetimes). Messages are
// parsed and built with pion/stun.

// TURN's lifetimes (RFC 8656 §§ 7.2, 9, 12).
const (
	defaultLifetime    = 10 * time.Minute
	maxLifetime        = time.Hour
	permissionLifetime = 5 * time.Minute
	channelLifetime    = 10 * time.Minute
)

// replier sends an answer to a client: from a UDP listener socket, or on a
// TCP or TLS connection's send queue.
type replier interface {
	reply(b []byte, to net.Addr)
}

// request is one request being handled.
type request struct {
	m      *stun.Message
	src    net.Addr // *net.UDPAddr or *net.TCPAddr
	local  net.Addr // the listener's address
	key    string   // allocKey(src, local): the allocation table's key
	via    replier
	stream *streamConn // the client's connection; nil over UDP
}

// control handles one message from a client that the data path did not
// relay. b is the caller's buffer; nothing keeps it.
func (s *Server) control(b []byte, src, local net.Addr, via replier, sc *streamConn) {
	if frames.IsChannelData(b) {
		s.metrics.unroutable.Inc() // a channel of no allocation
		return
	}
	m := &stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		s.metrics.malformed.Inc()
		return
	}
	switch m.Type.Class {
	case stun.ClassRequest:
	case stun.ClassIndication:
		s.metrics.unroutable.Inc() // a Send indication of no allocation, or to no permitted peer
		return
	default:
		return // responses: a client has nothing to answer
	}
	r := &request{m: m, src: src, local: local, via: via, stream: sc}
	if sc != nil {
		r.key = sc.key // the connection's tuple, made once when it was accepted
	} else {
		r.key = allocKey(src, local)
	}
	switch m.Type.Method {
	case stun.MethodBinding:
		r.via.reply(frames.AppendBindingSuccess(nil, b, addrPort(src)), src)
	case stun.MethodAllocate:
		s.allocate(r)
	case stun.MethodRefresh:
		s.refresh(r)
	case stun.MethodCreatePermission:
		s.createPermission(r)
	case stun.MethodChannelBind:
		s.channelBind(r)
	default:
		s.fail(r, stun.CodeBadRequest)
	}
}

// respond answers r with class, the attributes given, MESSAGE-INTEGRITY when
// key is set, and FINGERPRINT.
func (s *Server) respond(r *request, class stun.MessageClass, key stun.MessageIntegrity, attrs ...stun.Setter) {
	setters := make([]stun.Setter, 0, len(attrs)+4)
	setters = append(setters, stun.NewTransactionIDSetter(r.m.TransactionID), stun.NewType(r.m.Type.Method, class))
	setters = append(setters, attrs...)
	if key != nil {
		setters = append(setters, key)
	}
	setters = append(setters, stun.Fingerprint)
	msg, err := stun.Build(setters...)
	if err != nil {
		return
	}
	r.via.reply(msg.Raw, r.src)
}

// fail answers r with an error code.
func (s *Server) fail(r *request, code stun.ErrorCode, attrs ...stun.Setter) {
	s.respond(r, stun.ClassErrorResponse, nil, append([]stun.Setter{code}, attrs...)...)
}

// challenge answers r with code (401 or 438), the realm and a fresh nonce.
func (s *Server) challenge(r *request, code stun.ErrorCode) {
	s.fail(r, code, stun.NewRealm(s.realm), stun.NewNonce(s.nonces.make(time.Now())))
}

// authorize checks r's long-term credential (RFC 8489 § 9.2.4) and answers
// the request itself when it fails: 401 with a nonce, 438 for a stale one,
// 400 when an attribute is missing; for a client that holds an allocation
// under another username, 437 to an Allocate and 441 to anything else.
func (s *Server) authorize(r *request) (key stun.MessageIntegrity, username string, ok bool) {
	m := r.m
	if !m.Contains(stun.AttrMessageIntegrity) {
		s.challenge(r, stun.CodeUnauthorized)
		return nil, "", false
	}
	var user stun.Username
	var realm stun.Realm
	var nonce stun.Nonce
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil || nonce.GetFrom(m) != nil {
		s.fail(r, stun.CodeBadRequest)
		return nil, "", false
	}
	if !s.nonces.valid(string(nonce), time.Now()) {
		s.challenge(r, stun.CodeStaleNonce)
		return nil, "", false
	}
	username = user.String()
	k, why := s.authenticate(username, realm.String(), r)
	switch {
	case why == AuthOwnerMismatch && m.Type.Method == stun.MethodAllocate:
		s.fail(r, stun.CodeAllocMismatch)
		return nil, "", false
	case why == AuthOwnerMismatch:
		s.fail(r, stun.CodeWrongCredentials)
		return nil, "", false
	case why != "":
		s.challenge(r, stun.CodeUnauthorized)
		return nil, "", false
	}
	key = stun.MessageIntegrity(k)
	if key.Check(m) != nil {
		s.refuse(AuthBadPassword, r.src)
		s.challenge(r, stun.CodeUnauthorized)
		return nil, "", false
	}
	s.metrics.authOK.Inc()
	return key, username, true
}

// allocate handles an Allocate request (RFC 8656 § 7.2).
func (s *Server) allocate(r *request) {
	key, username, ok := s.authorize(r)
	if !ok {
		return
	}
	m := r.m
	if a, ok := s.allocs.get(r.key); ok {
		if a.txid == m.TransactionID { // a retransmission: the same answer again
			s.respond(r, stun.ClassSuccessResponse, key, allocated(a, r.src)...)
			return
		}
		s.fail(r, stun.CodeAllocMismatch)
		return
	}
	transport, err := m.Get(stun.AttrRequestedTransport)
	switch {
	case err != nil || len(transport) != 4:
		s.fail(r, stun.CodeBadRequest)
		return
	case transport[0] != 17: // UDP; TCP relaying (RFC 6062) is not offered
		s.fail(r, stun.CodeUnsupportedTransProto)
		return
	case m.Contains(stun.AttrDontFragment): // we cannot set DF on relayed datagrams
		s.fail(r, stun.CodeUnknownAttribute, stun.UnknownAttributes{stun.AttrDontFragment})
		return
	}
	if fam, err := m.Get(stun.AttrRequestedAddressFamily); err == nil && (len(fam) < 1 || fam[0] != 1) {
		s.fail(r, stun.CodeAddrFamilyNotSupported) // relay addresses are IPv4
		return
	}
	even := m.Contains(stun.AttrEvenPort)
	if m.Contains(stun.AttrReservationToken) {
		if even {
			s.fail(r, stun.CodeBadRequest)
		} else {
			s.fail(r, stun.CodeInsufficientCapacity) // no token was ever handed out
		}
		return
	}
	if !s.quota(username) {
		s.fail(r, stun.CodeAllocQuotaReached)
		return
	}
	rc, err := s.allocateRelay(even)
	if err != nil {
		s.fail(r, stun.CodeInsufficientCapacity)
		return
	}
	lifetime := defaultLifetime
	if d, ok := requestedLifetime(m); ok && d > defaultLifetime {
		lifetime = d
	}
	a := s.newLiveAllocation(r, username, rc)
	a.txid, a.lifetime, a.ends = m.TransactionID, lifetime, time.Now().Add(lifetime)
	if !s.allocs.add(r.key, a) {
		_ = rc.Close()
		s.fail(r, stun.CodeAllocMismatch)
		return
	}
	s.routeClient(rc, r)
	s.metrics.allocationsActive.Inc()
	s.metrics.created(a.session.transport).Inc()
	if s.onCreated != nil {
		s.onCreated(a.report())
	}
	if s.isRevoked(username) { // revoked while it was being made
		s.endAllocation(r.key, nil)
		s.fail(r, stun.CodeUnauthorized)
		return
	}
	s.respond(r, stun.ClassSuccessResponse, key, allocated(a, r.src)...)
}

// allocated is the success answer's attributes for allocation a.
func allocated(a liveAllocation, src net.Addr) []stun.Setter {
	ra := a.relayAddr
	mapped := addrPort(src)
	return []stun.Setter{
		xorAddress{stun.AttrXORRelayedAddress, ra},
		lifetimeAttr(a.lifetime),
		xorAddress{stun.AttrXORMappedAddress, mapped},
	}
}

// refresh handles a Refresh request (RFC 8656 § 7.4): a new lifetime, or
// the end of the allocation with lifetime 0.
func (s *Server) refresh(r *request) {
	key, _, ok := s.authorize(r)
	if !ok {
		return
	}
	lifetime := defaultLifetime
	if d, ok := requestedLifetime(r.m); ok {
		lifetime = d
	}
	if lifetime == 0 {
		// Also when there is none any more: the answer to a retransmission.
		s.endAllocation(r.key, nil)
		s.respond(r, stun.ClassSuccessResponse, key, lifetimeAttr(0))
		return
	}
	if !s.allocs.extend(r.key, lifetime, time.Now()) {
		s.fail(r, stun.CodeAllocMismatch)
		return
	}
	s.respond(r, stun.ClassSuccessResponse, key, lifetimeAttr(lifetime))
}

// createPermission handles a CreatePermission request (RFC 8656 § 9): every
// peer it names is permitted, or none is.
func (s *Server) createPermission(r *request) {
	key, rc, ok := s.authorizeOnAllocation(r)
	if !ok {
		return
	}
	var peers []netip.Addr
	for _, at := range r.m.Attributes {
		if at.Type != stun.AttrXORPeerAddress {
			continue
		}
		peer, ok := s.peer(r, at.Value)
		if !ok {
			return
		}
		peers = append(peers, peer.Addr())
	}
	if len(peers) == 0 {
		s.fail(r, stun.CodeBadRequest)
		return
	}
	until := monoNow() + int64(permissionLifetime)
	for _, ip := range peers {
		rc.permit(ip, until)
	}
	s.respond(r, stun.ClassSuccessResponse, key)
}

// authorizeOnAllocation is authorize for a request on the client's
// allocation, whose relay socket it returns; without one it answers 437.
func (s *Server) authorizeOnAllocation(r *request) (stun.MessageIntegrity, *relayConn, bool) {
	key, _, ok := s.authorize(r)
	if !ok {
		return nil, nil, false
	}
	a, ok := s.allocs.get(r.key)
	if !ok {
		s.fail(r, stun.CodeAllocMismatch)
		return nil, nil, false
	}
	return key, a.session.rc, true
}

// peer reads an XOR-PEER-ADDRESS value and checks it against the relay's
// family (IPv4) and the peer policy; when it fails it answers r itself
// (400, 443 or 403).
func (s *Server) peer(r *request, v []byte) (netip.AddrPort, bool) {
	peer, ok := frames.XORAddress(v, r.m.TransactionID[:])
	switch {
	case !ok:
		s.fail(r, stun.CodeBadRequest)
	case !peer.Addr().Is4():
		s.fail(r, stun.CodePeerAddrFamilyMismatch)
	case !s.permit(peer.Addr()):
		s.fail(r, stun.CodeForbidden)
	default:
		return peer, true
	}
	return peer, false
}

// channelBind handles a ChannelBind request (RFC 8656 § 11): it binds or
// refreshes a channel, and the permission of its peer.
func (s *Server) channelBind(r *request) {
	key, rc, ok := s.authorizeOnAllocation(r)
	if !ok {
		return
	}
	v, err := r.m.Get(stun.AttrChannelNumber)
	if err != nil || len(v) != 4 {
		s.fail(r, stun.CodeBadRequest)
		return
	}
	number := binary.BigEndian.Uint16(v)
	pv, err := r.m.Get(stun.AttrXORPeerAddress)
	if err != nil || number < 0x4000 || number > 0x7FFF {
		s.fail(r, stun.CodeBadRequest)
		return
	}
	peer, ok := s.peer(r, pv)
	if !ok {
		return
	}
	now := monoNow()
	if !rc.bind(number, peer, now+int64(channelLifetime)) {
		s.fail(r, stun.CodeBadRequest) // the number or the peer is bound to another
		return
	}
	rc.permit(peer.Addr(), now+int64(permissionLifetime))
	s.respond(r, stun.ClassSuccessResponse, key)
}

// endAllocation ends the allocation key names, if it has one (and, when
// owner is not nil, if owner is its relay socket): its relay socket closes,
// its routes go, and OnAllocationEnded hears of it.
func (s *Server) endAllocation(key string, owner *relayConn) bool {
	a, ok := s.allocs.remove(key, owner)
	if !ok {
		return false
	}
	_ = a.session.rc.Close()
	s.metrics.allocationsActive.Dec()
	if s.onEnded != nil {
		s.onEnded(a.report())
	}
	return true
}

// requestedLifetime reads a request's LIFETIME, capped at maxLifetime.
func requestedLifetime(m *stun.Message) (time.Duration, bool) {
	v, err := m.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		return 0, false
	}
	return min(time.Duration(binary.BigEndian.Uint32(v))*time.Second, maxLifetime), true
}

// lifetimeAttr is a LIFETIME attribute.
type lifetimeAttr time.Duration

func (l lifetimeAttr) AddTo(m *stun.Message) error {
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(time.Duration(l)/time.Second))
	m.Add(stun.AttrLifetime, v[:])
	return nil
}

// xorAddress is an XOR-*-ADDRESS attribute.
type xorAddress struct {
	t  stun.AttrType
	ap netip.AddrPort
}

func (x xorAddress) AddTo(m *stun.Message) error {
	a := stun.XORMappedAddress{IP: x.ap.Addr().AsSlice(), Port: int(x.ap.Port())}
	return a.AddToAs(m, x.t)
}

// processStart anchors monoNow.
var processStart = time.Now()

// monoNow is the monotonic clock in nanoseconds, for the lifetimes of
// permissions and channels, kept in the data path's routes as int64s.
// TURN's lifetimes are real time, whatever clock credentials are read on.
func monoNow() int64 { return int64(time.Since(processStart)) }
