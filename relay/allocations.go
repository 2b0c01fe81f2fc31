package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/traverse/traverse/internal/keyrate"
)

// liveAllocation is an allocation: its TURN state (lifetime, the Allocate
// that made it), and what the relay needs beyond it: to let its owner keep
// refreshing after the credential expires, to refuse requests on it under
// another username, to count quotas and, under auth.strict_expiry, to close
// it at expiry. Its channels and permissions live in its relay socket's
// routes (routes.go), where the data path reads them.
type liveAllocation struct {
	username  string
	quotaKey  string    // the user part of a TURN REST username, or the static user
	account   string    // the AccountSid of an issuer-minted username, else ""
	expires   time.Time // the credential's expiry; zero for static users
	relayAddr netip.AddrPort
	session   session // what Allocations reports (sessions.go)

	// TURN's own: the lifetime last granted and when it runs out (real
	// time, time.Now), and the Allocate's transaction, answered again if
	// the client sends it again.
	lifetime time.Duration
	ends     time.Time
	txid     [stun.TransactionIDSize]byte
}

// allocTable indexes live allocations by their 5-tuple (allocKey).
type allocTable struct {
	mu         sync.Mutex
	bySrc      map[string]*liveAllocation
	perUser    map[string]int
	perAccount map[string]int
}

func newAllocTable() *allocTable {
	return &allocTable{bySrc: map[string]*liveAllocation{}, perUser: map[string]int{}, perAccount: map[string]int{}}
}

// allocKey names an allocation: its 5-tuple (RFC 8656 § 2), that is the
// client's transport address and the listener address it came in on. One
// client port may reach two of our listeners at once (3478 and 443, or two
// UDP sockets), each its own allocation; over TCP one connection is one
// tuple. It is src.Network() + "|" + src.String() + "|" + local.String()
// (UDP and TCP clients on one ip:port are different clients), built in one
// allocation: it is computed for every request.
func allocKey(src, local net.Addr) string {
	var buf [96]byte
	b := appendAddrKey(buf[:0], src, true)
	b = append(b, '|')
	b = appendAddrKey(b, local, false)
	return string(b)
}

// appendAddrKey appends a's network (when withNet) and ip:port, an
// IPv4-mapped address in dotted form as net.IP prints it.
func appendAddrKey(b []byte, a net.Addr, withNet bool) []byte {
	var ap netip.AddrPort
	var prefix string
	switch v := a.(type) {
	case nil:
		return b
	case *net.UDPAddr:
		if v == nil {
			return b
		}
		ap, prefix = v.AddrPort(), "udp|"
	case *net.TCPAddr:
		if v == nil {
			return b
		}
		ap, prefix = v.AddrPort(), "tcp|"
	}
	if !ap.Addr().IsValid() {
		if withNet {
			b = append(append(b, a.Network()...), '|')
		}
		return append(b, a.String()...)
	}
	if withNet {
		b = append(b, prefix...)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).AppendTo(b)
}

func (t *allocTable) get(key string) (liveAllocation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.bySrc[key]
	if !ok {
		return liveAllocation{}, false
	}
	return *a, true
}

func (t *allocTable) has(key string) bool {
	t.mu.Lock()
	_, ok := t.bySrc[key]
	t.mu.Unlock()
	return ok
}

// add enters a new allocation; false if key already has one.
func (t *allocTable) add(key string, a liveAllocation) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.bySrc[key]; ok {
		return false
	}
	t.bySrc[key] = &a
	t.perUser[a.quotaKey]++
	if a.account != "" {
		t.perAccount[a.account]++
	}
	return true
}

// extend gives key's allocation a new lifetime from now; false if it has
// none.
func (t *allocTable) extend(key string, lifetime time.Duration, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.bySrc[key]
	if ok {
		a.lifetime, a.ends = lifetime, now.Add(lifetime)
	}
	return ok
}

func (t *allocTable) uncountAccount(account string) {
	if account == "" {
		return
	}
	if t.perAccount[account]--; t.perAccount[account] <= 0 {
		delete(t.perAccount, account)
	}
}

// remove takes key's allocation out of the table; when owner is not nil,
// only if owner is its relay socket.
func (t *allocTable) remove(key string, owner *relayConn) (liveAllocation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.bySrc[key]
	if !ok || (owner != nil && a.session.rc != owner) {
		return liveAllocation{}, false
	}
	delete(t.bySrc, key)
	if t.perUser[a.quotaKey]--; t.perUser[a.quotaKey] <= 0 {
		delete(t.perUser, a.quotaKey)
	}
	t.uncountAccount(a.account)
	return *a, true
}

// countAccount is the live allocations of an AccountSid.
func (t *allocTable) countAccount(account string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perAccount[account]
}

func (t *allocTable) countUser(quotaKey string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.perUser[quotaKey]
}

func (t *allocTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bySrc)
}

// find lists the keys of the allocations match selects.
func (t *allocTable) find(match func(a *liveAllocation) bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for key, a := range t.bySrc {
		if match(a) {
			out = append(out, key)
		}
	}
	return out
}

// lifetimes is one walk of the table for the lifetime sweep: the keys of
// the allocations whose lifetime ran out by now, and the relay sockets of
// the others.
func (t *allocTable) lifetimes(now time.Time) (ended []string, live []*relayConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live = make([]*relayConn, 0, len(t.bySrc))
	for key, a := range t.bySrc {
		if now.Before(a.ends) {
			live = append(live, a.session.rc)
		} else {
			ended = append(ended, key)
		}
	}
	return ended, live
}

// sourceOf is a client address's source: its IP, an IPv6 address cut to its
// /64 (one host, or one office, usually holds a whole /64).
func sourceOf(a net.Addr) netip.Addr {
	return keyrate.Source(addrPort(a).Addr())
}
