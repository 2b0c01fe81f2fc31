package relay

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Allocation is a live allocation as an operator sees it. It carries the
// username (never a password), so callers decide who may see it.
type Allocation struct {
	// ID names the allocation for CloseAllocation: its relayed address,
	// unique among live allocations.
	ID string
	// Username is the TURN username that created it.
	Username string
	// Transport is the client's transport: "udp" or "tcp" (TLS included).
	Transport string
	// Client is the client's transport address as the relay sees it.
	Client string
	// Relayed is the relayed transport address advertised to the client.
	Relayed netip.AddrPort
	// Created is when the allocation was made.
	Created time.Time
	// Expires is when its TURN REST credential expires; zero for static users.
	Expires time.Time
}

// Allocations lists the live allocations, oldest first.
func (s *Server) Allocations() []Allocation {
	s.allocs.mu.Lock()
	out := make([]Allocation, 0, len(s.allocs.bySrc))
	for key, a := range s.allocs.bySrc {
		transport, client, _ := strings.Cut(key, "|")
		out = append(out, Allocation{
			ID: a.relayAddr.String(), Username: a.username, Transport: transport, Client: client,
			Relayed: a.relayAddr, Created: a.created, Expires: a.expires,
		})
	}
	s.allocs.mu.Unlock()
	slices.SortFunc(out, func(a, b Allocation) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// CloseAllocation ends the allocation id (see Allocation.ID) at once, as
// auth.strict_expiry does at expiry: closing its relay socket makes pion
// delete it. The client's next Refresh gets 437. It reports whether the
// allocation was live.
func (s *Server) CloseAllocation(id string) bool {
	ra, err := netip.ParseAddrPort(id)
	if err != nil {
		return false
	}
	s.relaysMu.Lock()
	rc := s.relays[ra]
	s.relaysMu.Unlock()
	if rc == nil {
		return false
	}
	_ = rc.Close()
	return true
}

// PortsInUse is the number of relay ports held by allocations, and the size
// of relay.ports.
func (s *Server) PortsInUse() (used, total int) {
	s.relaysMu.Lock()
	used = len(s.relays)
	s.relaysMu.Unlock()
	return used, s.ports.Max - s.ports.Min + 1
}
