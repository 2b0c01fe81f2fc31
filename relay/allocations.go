package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// liveAllocation is what the relay remembers of an allocation pion created:
// enough to let its owner keep refreshing after the credential expires, to
// refuse requests on it under another username, to count quotas and, under
// auth.strict_expiry, to close it at expiry.
type liveAllocation struct {
	username  string
	quotaKey  string    // the user part of a TURN REST username, or the static user
	account   string    // the AccountSid of an issuer-minted username, else ""
	expires   time.Time // zero for static users
	relayAddr netip.AddrPort
	session   session // what Allocations reports (sessions.go)
}

// allocTable indexes live allocations by the client's transport address
// (network and ip:port), which identifies the 5-tuple on a given listener.
type allocTable struct {
	mu         sync.Mutex
	bySrc      map[string]*liveAllocation
	perUser    map[string]int
	perAccount map[string]int
}

func newAllocTable() *allocTable {
	return &allocTable{bySrc: map[string]*liveAllocation{}, perUser: map[string]int{}, perAccount: map[string]int{}}
}

// srcKey names a client transport address. UDP and TCP clients on the same
// ip:port are different clients. It is a.Network() + "|" + a.String(),
// built in one allocation for the UDP and TCP addresses pion hands us: it is
// computed several times per request (AuthHandler, events, the listener).
func srcKey(a net.Addr) string {
	var ap netip.AddrPort
	var prefix string
	switch v := a.(type) {
	case nil:
		return ""
	case *net.UDPAddr:
		if v == nil {
			return ""
		}
		ap, prefix = v.AddrPort(), "udp|"
	case *net.TCPAddr:
		if v == nil {
			return ""
		}
		ap, prefix = v.AddrPort(), "tcp|"
	default:
		return a.Network() + "|" + a.String()
	}
	if !ap.Addr().IsValid() {
		return a.Network() + "|" + a.String()
	}
	// net.IP prints an IPv4-mapped address in dotted form; so must we.
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	var buf [64]byte
	b := append(buf[:0], prefix...)
	b = ap.AppendTo(b)
	return string(b)
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

func (t *allocTable) add(key string, a liveAllocation) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.bySrc[key]; ok {
		t.perUser[old.quotaKey]--
		t.uncountAccount(old.account)
	}
	t.bySrc[key] = &a
	t.perUser[a.quotaKey]++
	if a.account != "" {
		t.perAccount[a.account]++
	}
}

func (t *allocTable) uncountAccount(account string) {
	if account == "" {
		return
	}
	if t.perAccount[account]--; t.perAccount[account] <= 0 {
		delete(t.perAccount, account)
	}
}

func (t *allocTable) remove(key string) (liveAllocation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.bySrc[key]
	if !ok {
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

// expired lists the relay addresses of allocations whose credential expired
// before now.
func (t *allocTable) expired(now time.Time) []netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []netip.AddrPort
	for _, a := range t.bySrc {
		if !a.expires.IsZero() && !now.Before(a.expires) {
			out = append(out, a.relayAddr)
		}
	}
	return out
}
