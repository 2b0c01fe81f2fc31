package main

import (
	"crypto/md5"  //nolint:gosec // the STUN long-term key is MD5 (RFC 8489 §9.2.2)
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 (RFC 8489 §14.5)
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/traverse/traverse/auth"
)

// The allocation-rate load generator. The load generator and the servers
// share the machine's cores, so whatever the generator spends per allocation
// is taken from the server under test and caps the rate either server can
// show: a generator that costs as much as the server halves every figure and
// pulls the ratio towards 1. So this one does only what a client must do
// per allocation, and nothing else inside the clock:
//
//   - every allocation has its own UDP socket (its own 5-tuple), opened and
//     connected before the clock starts: socket creation is the client's
//     cost, not the server's;
//   - every allocation has its own TURN REST credential (username and
//     password), minted before the clock as an app back end would have;
//   - inside the clock each allocation does the whole exchange: an unsigned
//     Allocate, the server's 401 with REALM and NONCE, the long-term key
//     (MD5) and the signed Allocate (HMAC-SHA1 MESSAGE-INTEGRITY, FINGERPRINT),
//     and a success response carrying XOR-RELAYED-ADDRESS;
//   - messages are built by hand into reused buffers, and one event loop
//     (epoll over every socket, non-blocking reads and writes) keeps a fixed
//     number of allocations in flight, so the generator wakes once per batch
//     of answers instead of once per goroutine per answer.

const (
	stunCookie = 0x2112A442

	attrUsername         = 0x0006
	attrMessageIntegrity = 0x0008
	attrErrorCode        = 0x0009
	attrLifetime         = 0x000D
	attrRealm            = 0x0014
	attrNonce            = 0x0015
	attrXORRelayed       = 0x0016
	attrRequestedTrans   = 0x0019
	attrFingerprint      = 0x8028

	typeAllocate        = 0x0003
	typeAllocateOK      = 0x0103
	typeAllocateErr     = 0x0113
	typeRefresh         = 0x0004
	typeRefreshOK       = 0x0104
	typeRefreshErr      = 0x0114
	fingerprintXOR      = 0x5354554e
	allocTryTimeout     = 500 * time.Millisecond
	allocTries          = 3 // sends of one request before it counts as unanswered
	allocFreshSockets   = 5 // new sockets for one allocation whose 5-tuple is taken
	allocNonceRetries   = 3 // 438 Stale Nonce answers followed for one request
	allocScanInterval   = 20 * time.Millisecond
	allocMaxMessageSize = 1024
)

// stunMsg builds a STUN message into a reused buffer.
type stunMsg struct{ b []byte }

func (m *stunMsg) start(typ uint16, tid *[12]byte) {
	m.b = m.b[:20]
	binary.BigEndian.PutUint16(m.b[0:], typ)
	binary.BigEndian.PutUint16(m.b[2:], 0)
	binary.BigEndian.PutUint32(m.b[4:], stunCookie)
	copy(m.b[8:20], tid[:])
}

func (m *stunMsg) attr(t uint16, v []byte) {
	n := len(v)
	m.b = binary.BigEndian.AppendUint16(m.b, t)
	m.b = binary.BigEndian.AppendUint16(m.b, uint16(n))
	m.b = append(m.b, v...)
	for ; n%4 != 0; n++ {
		m.b = append(m.b, 0)
	}
	binary.BigEndian.PutUint16(m.b[2:], uint16(len(m.b)-20))
}

func (m *stunMsg) attrString(t uint16, v string) { m.attr(t, bytesOf(v)) }

// bytesOf views a string's bytes without copying; they are only read.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

var colon = []byte{':'}

// integrity appends MESSAGE-INTEGRITY: HMAC-SHA1 over the message so far,
// with the header length already counting the attribute (RFC 8489 §14.5).
func (m *stunMsg) integrity(mac *hmacSHA1) {
	binary.BigEndian.PutUint16(m.b[2:], uint16(len(m.b)-20+24))
	sum := mac.sum(m.b)
	m.attr(attrMessageIntegrity, sum)
}

// fingerprint appends FINGERPRINT (RFC 8489 §14.7).
func (m *stunMsg) fingerprint() {
	binary.BigEndian.PutUint16(m.b[2:], uint16(len(m.b)-20+8))
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], crc32.ChecksumIEEE(m.b)^fingerprintXOR)
	m.attr(attrFingerprint, v[:])
}

// hmacSHA1 is HMAC-SHA1 with a reusable hash and buffers, so signing a
// message allocates nothing.
type hmacSHA1 struct {
	h          hash.Hash
	ipad, opad [64]byte
	inner, out []byte
}

func newHMACSHA1() *hmacSHA1 {
	return &hmacSHA1{h: sha1.New(), inner: make([]byte, 0, 20), out: make([]byte, 0, 20)} //nolint:gosec
}

// setKey takes a key of at most 64 bytes (the long-term key is 16).
func (m *hmacSHA1) setKey(key []byte) {
	m.ipad, m.opad = [64]byte{}, [64]byte{}
	copy(m.ipad[:], key)
	copy(m.opad[:], key)
	for i := range m.ipad {
		m.ipad[i] ^= 0x36
		m.opad[i] ^= 0x5c
	}
}

func (m *hmacSHA1) sum(msg []byte) []byte {
	m.h.Reset()
	m.h.Write(m.ipad[:])
	m.h.Write(msg)
	m.inner = m.h.Sum(m.inner[:0])
	m.h.Reset()
	m.h.Write(m.opad[:])
	m.h.Write(m.inner)
	m.out = m.h.Sum(m.out[:0])
	return m.out
}

// stunReply is what the generator reads from a response.
type stunReply struct {
	typ          uint16
	code         int // ERROR-CODE, or 0
	nonce, realm []byte
	relayed      bool // XOR-RELAYED-ADDRESS present
}

// parseReply reads a response to the request with transaction ID tid. It
// checks every length against the datagram, so a malformed one is refused,
// never a panic.
func parseReply(b []byte, tid *[12]byte) (stunReply, bool) {
	var r stunReply
	if len(b) < 20 || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:]) != stunCookie ||
		[12]byte(b[8:20]) != *tid {
		return r, false
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 20+n > len(b) {
		return r, false
	}
	r.typ = binary.BigEndian.Uint16(b[0:])
	for a := b[20 : 20+n]; len(a) >= 4; {
		t, l := binary.BigEndian.Uint16(a[0:]), int(binary.BigEndian.Uint16(a[2:]))
		if 4+l > len(a) {
			return r, false
		}
		v := a[4 : 4+l]
		switch t {
		case attrErrorCode:
			if l >= 4 {
				r.code = int(v[2]&7)*100 + int(v[3])
			}
		case attrNonce:
			r.nonce = v
		case attrRealm:
			r.realm = v
		case attrXORRelayed:
			r.relayed = l >= 8
		}
		a = a[min(4+(l+3)&^3, len(a)):]
	}
	return r, true
}

// allocSlot is one allocation's client: its socket and credential.
type allocSlot struct {
	fd                 int
	username, password string
	realm              string
	nonce              []byte
	key                [16]byte
	held               bool
}

const (
	phaseChallenge = iota // unsigned Allocate sent, waiting for the 401
	phaseSigned           // signed Allocate sent
	phaseRelease          // signed Refresh with LIFETIME 0 sent
)

// allocLane is one allocation in flight.
type allocLane struct {
	slot    int // -1 when idle
	phase   int
	tid     [12]byte
	msg     stunMsg
	sent    time.Time
	tries   int
	stale   int // 438s followed
	sockets int // fresh sockets taken for this allocation
}

// allocGen drives allocations over pre-opened sockets from one event loop.
type allocGen struct {
	server  netip.AddrPort
	ep      int
	slots   []allocSlot
	spent   []int // sockets given up for a fresh one, closed at the end
	lanes   []allocLane
	laneOf  []int // slot -> lane, or -1
	events  []unix.EpollEvent
	rbuf    []byte
	mac     *hmacSHA1
	md5     hash.Hash
	rng     *rand.ChaCha8
	next    int // next slot to start
	stop    bool
	ok, bad int64
	errs    map[string]int
	first   string
}

// newAllocGen opens n sockets connected to server and mints a credential for
// each: all the client's set-up, done before the clock starts.
func newAllocGen(server netip.AddrPort, secret string, n, conc int) (*allocGen, error) {
	if !server.Addr().Is4() {
		return nil, errors.New("allocation load: IPv4 servers only")
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rand.Uint32())
	}
	g := &allocGen{server: server, ep: ep, slots: make([]allocSlot, n), laneOf: make([]int, n),
		lanes: make([]allocLane, conc), events: make([]unix.EpollEvent, 256), rbuf: make([]byte, 1500),
		mac: newHMACSHA1(), md5: md5.New(), rng: rand.NewChaCha8(seed), errs: map[string]int{}}
	for i := range g.slots {
		g.slots[i].fd = -1
		g.laneOf[i] = -1
	}
	for i := range g.lanes {
		g.lanes[i] = allocLane{slot: -1, msg: stunMsg{b: make([]byte, 0, allocMaxMessageSize)}}
	}
	now := time.Now()
	for i := range g.slots {
		s := &g.slots[i]
		if s.fd, err = g.dial(i); err != nil {
			g.close()
			return nil, err
		}
		cred, err := auth.Mint([]byte(secret), fmt.Sprintf("alloc%d", i), time.Hour, now)
		if err != nil {
			g.close()
			return nil, err
		}
		s.username, s.password = cred.Username, cred.Password
		s.nonce = make([]byte, 0, 128)
	}
	return g, nil
}

// dial opens a non-blocking UDP socket connected to the server and watches
// it; the epoll data is the slot index.
func (g *allocGen) dial(slot int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: g.server.Addr().As4(), Port: int(g.server.Port())}); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(slot)}
	if err := unix.EpollCtl(g.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("epoll_ctl: %w", err)
	}
	return fd, nil
}

func (g *allocGen) close() {
	g.closeSockets()
	if g.ep >= 0 {
		_ = unix.Close(g.ep)
		g.ep = -1
	}
}

// closeSockets closes the client sockets; the counts stay readable.
func (g *allocGen) closeSockets() {
	for i := range g.slots {
		if g.slots[i].fd >= 0 {
			_ = unix.Close(g.slots[i].fd)
			g.slots[i].fd = -1
		}
	}
	for _, fd := range g.spent {
		_ = unix.Close(fd)
	}
	g.spent = nil
}

// allocate runs allocations until every slot has had its turn, deadline
// passes, or maxBad allocations have failed.
func (g *allocGen) allocate(deadline time.Time, maxBad int64) {
	g.next, g.stop = 0, false
	start := func(l int) bool {
		for !g.stop && g.next < len(g.slots) {
			if time.Now().After(deadline) || g.bad >= maxBad {
				g.stop = true
				break
			}
			s := g.next
			g.next++
			g.assign(l, s)
			g.sendChallenge(l)
			return true
		}
		return false
	}
	g.loop(start)
}

// release deletes every held allocation (signed Refresh, LIFETIME 0).
func (g *allocGen) release() {
	g.next, g.stop = 0, false
	start := func(l int) bool {
		for g.next < len(g.slots) {
			s := g.next
			g.next++
			if !g.slots[s].held {
				continue
			}
			g.assign(l, s)
			g.lanes[l].phase = phaseRelease
			g.sendSigned(l)
			return true
		}
		return false
	}
	g.loop(start)
}

func (g *allocGen) assign(l, s int) {
	ln := &g.lanes[l]
	ln.slot, ln.tries, ln.stale, ln.sockets = s, 0, 0, 0
	g.laneOf[s] = l
}

// loop keeps every lane busy (start fills an idle lane, false when there is
// nothing left) until all are idle.
func (g *allocGen) loop(start func(lane int) bool) {
	busy := 0
	for l := range g.lanes {
		if start(l) {
			busy++
		}
	}
	lastScan := time.Now()
	for busy > 0 {
		n, err := unix.EpollWait(g.ep, g.events, int(allocScanInterval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			g.fail(-1, fmt.Sprintf("epoll_wait: %v", err))
			return
		}
		for _, ev := range g.events[:max(n, 0)] {
			s := int(ev.Fd)
			if s < 0 || s >= len(g.slots) {
				continue
			}
			// One read per event: a socket has one request in flight, and
			// epoll is level-triggered, so anything more comes back at the
			// next wait without a read that ends in EAGAIN here.
			m, ok := g.read(g.slots[s].fd)
			l := g.laneOf[s]
			if !ok || l < 0 {
				continue // nothing, or a late answer to a finished exchange
			}
			if g.handle(l, g.rbuf[:m]) {
				g.finish(l)
				if !start(l) {
					busy--
				}
			}
		}
		if now := time.Now(); now.Sub(lastScan) >= allocScanInterval {
			lastScan = now
			for l := range g.lanes {
				if g.lanes[l].slot >= 0 && g.timeout(l, now) {
					g.finish(l)
					if !start(l) {
						busy--
					}
				}
			}
		}
	}
}

func (g *allocGen) finish(l int) {
	ln := &g.lanes[l]
	if ln.slot >= 0 {
		g.laneOf[ln.slot] = -1
	}
	ln.slot = -1
}

// read is a non-blocking read from a connected socket; raw, because it
// cannot block and so needs none of the runtime's syscall bookkeeping.
func (g *allocGen) read(fd int) (int, bool) {
	if fd < 0 {
		return 0, false
	}
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&g.rbuf[0])), uintptr(len(g.rbuf)))
	if errno != 0 {
		// EAGAIN: drained. ECONNREFUSED (ICMP from a closed port): nothing
		// to read either; the lane's timeout takes care of it.
		return 0, false
	}
	return int(n), true
}

func (g *allocGen) write(l int) {
	ln := &g.lanes[l]
	fd := g.slots[ln.slot].fd
	_, _, _ = unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&ln.msg.b[0])), uintptr(len(ln.msg.b)))
	ln.sent = time.Now()
	ln.tries++
}

func (g *allocGen) newTID(l int) {
	_, _ = g.rng.Read(g.lanes[l].tid[:])
}

var requestedUDP = []byte{17, 0, 0, 0}

// sendChallenge sends the unsigned Allocate that the server answers with 401.
func (g *allocGen) sendChallenge(l int) {
	ln := &g.lanes[l]
	ln.phase, ln.tries = phaseChallenge, 0
	g.newTID(l)
	ln.msg.start(typeAllocate, &ln.tid)
	ln.msg.attr(attrRequestedTrans, requestedUDP)
	ln.msg.fingerprint()
	g.write(l)
}

var lifetimeZero = []byte{0, 0, 0, 0}

// sendSigned sends the lane's signed request: Allocate or Refresh(0).
func (g *allocGen) sendSigned(l int) {
	ln := &g.lanes[l]
	s := &g.slots[ln.slot]
	ln.tries = 0
	g.newTID(l)
	if ln.phase == phaseRelease {
		ln.msg.start(typeRefresh, &ln.tid)
		ln.msg.attr(attrLifetime, lifetimeZero)
	} else {
		ln.msg.start(typeAllocate, &ln.tid)
		ln.msg.attr(attrRequestedTrans, requestedUDP)
	}
	ln.msg.attrString(attrUsername, s.username)
	ln.msg.attrString(attrRealm, s.realm)
	ln.msg.attr(attrNonce, s.nonce)
	g.mac.setKey(s.key[:])
	ln.msg.integrity(g.mac)
	ln.msg.fingerprint()
	g.write(l)
}

// handle takes a datagram for lane l; true when the lane's exchange is over.
func (g *allocGen) handle(l int, b []byte) bool {
	ln := &g.lanes[l]
	s := &g.slots[ln.slot]
	r, ok := parseReply(b, &ln.tid)
	if !ok {
		return false // not the answer to what is in flight (a late retransmission)
	}
	switch ln.phase {
	case phaseChallenge:
		if r.typ == typeAllocateErr && r.code == 437 && ln.sockets < allocFreshSockets {
			// coturn answers even the unsigned Allocate with 437 while it
			// still holds state for the 5-tuple (see below).
			return g.freshSocket(l)
		}
		if r.typ != typeAllocateErr || r.code != 401 || len(r.nonce) == 0 || len(r.realm) == 0 || len(r.nonce) > 763 {
			return g.fail(l, describe("unsigned Allocate", r))
		}
		s.nonce = append(s.nonce[:0], r.nonce...)
		if s.realm != string(r.realm) {
			s.realm = string(r.realm)
		}
		// The long-term key, MD5(username:realm:password): the client's
		// cost, so inside the clock.
		h := g.md5
		h.Reset()
		h.Write(bytesOf(s.username))
		h.Write(colon)
		h.Write(bytesOf(s.realm))
		h.Write(colon)
		h.Write(bytesOf(s.password))
		h.Sum(s.key[:0])
		ln.phase = phaseSigned
		g.sendSigned(l)
		return false
	case phaseSigned:
		switch {
		case r.typ == typeAllocateOK && r.relayed:
			g.ok++
			s.held = true
			return true
		case r.typ == typeAllocateErr && r.code == 438 && len(r.nonce) > 0 && len(r.nonce) <= 763 && ln.stale < allocNonceRetries:
			ln.stale++
			s.nonce = append(s.nonce[:0], r.nonce...)
			g.sendSigned(l)
			return false
		case r.typ == typeAllocateErr && (r.code == 437 || r.code == 401) && ln.sockets < allocFreshSockets:
			// The kernel gave this socket a source port whose 5-tuple
			// still holds an allocation from an earlier run (coturn: 437;
			// traverse refuses another username on it: 401). The load
			// generator's artefact: take a fresh socket and start over.
			return g.freshSocket(l)
		}
		return g.fail(l, describe("signed Allocate", r))
	case phaseRelease:
		if r.typ == typeRefreshErr && r.code == 438 && len(r.nonce) > 0 && len(r.nonce) <= 763 && ln.stale < allocNonceRetries {
			ln.stale++
			s.nonce = append(s.nonce[:0], r.nonce...)
			g.sendSigned(l)
			return false
		}
		s.held = false
		return true
	}
	return true
}

// freshSocket moves lane l's allocation to a new socket and starts it over.
// The old socket stays open until the end, so the kernel cannot hand its
// port out again.
func (g *allocGen) freshSocket(l int) bool {
	ln := &g.lanes[l]
	s := &g.slots[ln.slot]
	ln.sockets++
	_ = unix.EpollCtl(g.ep, unix.EPOLL_CTL_DEL, s.fd, nil)
	g.spent = append(g.spent, s.fd)
	s.fd = -1
	fd, err := g.dial(ln.slot)
	if err != nil {
		return g.fail(l, err.Error())
	}
	s.fd = fd
	g.sendChallenge(l)
	return false
}

// timeout retransmits the lane's request, or gives up on it; true when the
// lane's exchange is over.
func (g *allocGen) timeout(l int, now time.Time) bool {
	ln := &g.lanes[l]
	if now.Sub(ln.sent) < allocTryTimeout {
		return false
	}
	if ln.tries >= allocTries {
		if ln.phase == phaseRelease {
			return true
		}
		return g.fail(l, "no answer")
	}
	g.write(l) // the same message, the same transaction ID
	return false
}

// fail counts a failed allocation and remembers why (the first reason is
// reported; all are counted).
func (g *allocGen) fail(l int, why string) bool {
	g.bad++
	if g.first == "" {
		g.first = why
	}
	g.errs[why]++
	return true
}

func describe(what string, r stunReply) string {
	if r.code != 0 {
		return fmt.Sprintf("%s: error response %d", what, r.code)
	}
	return fmt.Sprintf("%s: unexpected answer type %#04x", what, r.typ)
}
