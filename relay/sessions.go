package relay

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/traverse/traverse/auth"
)

// This file is the relay's side of live control and metering: what it
// reports of each allocation (Allocations, and the OnAllocationCreated and
// OnAllocationEnded hooks), the per-allocation traffic counters, and the
// teardown of one allocation (Kill) or of every allocation a revocation
// names (SetRevoked). What to revoke and where usage goes is the caller's
// business (package usage).

// Traffic is what one allocation relayed: payload bytes and datagrams the
// client sent to its peers, and received from them.
type Traffic struct {
	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64
}

// Sub returns t minus u, field by field.
func (t Traffic) Sub(u Traffic) Traffic {
	return Traffic{t.BytesSent - u.BytesSent, t.BytesReceived - u.BytesReceived,
		t.PacketsSent - u.PacketsSent, t.PacketsReceived - u.PacketsReceived}
}

// counters are a relay socket's Traffic. Only the relay socket's own
// datagrams touch them, with one atomic add per field: no lock, nothing
// shared between shards, no allocation.
type counters struct {
	bytesSent, bytesReceived, packetsSent, packetsReceived atomic.Uint64
}

func (c *counters) sent(n int) {
	c.bytesSent.Add(uint64(n))
	c.packetsSent.Add(1)
}

func (c *counters) received(n int) {
	c.bytesReceived.Add(uint64(n))
	c.packetsReceived.Add(1)
}

func (c *counters) load() Traffic {
	return Traffic{c.bytesSent.Load(), c.bytesReceived.Load(), c.packetsSent.Load(), c.packetsReceived.Load()}
}

// Allocation is a live allocation as the relay reports it.
type Allocation struct {
	// ID names the allocation uniquely ("RA" and 32 hex digits).
	ID string
	// Username is the TURN username that created it.
	Username string
	// Account is the AccountSid of an issuer-minted username
	// (auth.AccountOf of its user part); empty for any other.
	Account string
	// Client is the client's transport address; Transport is udp, tcp or tls.
	Client    netip.AddrPort
	Transport string
	// Relay is the relayed transport address.
	Relay netip.AddrPort
	// Created is when it was made; Expires is the credential's expiry
	// (zero for a static user).
	Created, Expires time.Time
	// Permissions and Channels are the live ones.
	Permissions, Channels int
	// Traffic is what it has relayed so far.
	Traffic Traffic
}

// session is what an allocation's entry keeps for Allocation.
type session struct {
	id        string
	account   string
	client    netip.AddrPort
	transport string
	created   time.Time
	rc        *relayConn
}

// newLiveAllocation is the table entry of an allocation r makes for
// username on relay socket rc.
func (s *Server) newLiveAllocation(r *request, username string, rc *relayConn) liveAllocation {
	st := s.state.Load()
	a := liveAllocation{username: username, quotaKey: quotaKey(username, st), account: accountKey(username, st),
		relayAddr: rc.key}
	if _, static := st.userKeys[username]; !static {
		a.expires, _, _ = auth.ParseUsername(username)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	a.session = session{
		id:        "RA" + hex.EncodeToString(b[:]),
		client:    addrPort(r.src),
		transport: "udp",
		created:   s.now(),
		rc:        rc,
	}
	if r.stream != nil {
		a.session.transport = "tcp"
		if r.stream.tls {
			a.session.transport = "tls"
		}
	}
	return a
}

// report makes the Allocation of a table entry.
func (a *liveAllocation) report() Allocation {
	out := Allocation{
		ID: a.session.id, Username: a.username, Client: a.session.client, Transport: a.session.transport,
		Relay: a.relayAddr, Created: a.session.created, Expires: a.expires,
	}
	if _, user, err := auth.ParseUsername(a.username); err == nil && !a.expires.IsZero() {
		out.Account, _ = auth.AccountOf(user)
	}
	rt := a.session.rc.routes.Load()
	out.Permissions, out.Channels = rt.perms.len(), rt.channels.len()
	out.Traffic = a.session.rc.traffic.load()
	return out
}

// Allocations lists the live allocations of this node.
func (s *Server) Allocations() []Allocation {
	s.allocs.mu.Lock()
	entries := make([]*liveAllocation, 0, len(s.allocs.bySrc))
	for _, a := range s.allocs.bySrc {
		entries = append(entries, a)
	}
	s.allocs.mu.Unlock()
	out := make([]Allocation, len(entries))
	for i, a := range entries {
		out[i] = a.report()
	}
	return out
}

// Kill tears down the live allocation id on this node, and reports whether
// there was one. The client learns of it at its next request on the
// allocation (437 Allocation Mismatch) or by the silence of its peers.
func (s *Server) Kill(id string) bool {
	for _, key := range s.allocs.find(func(a *liveAllocation) bool { return a.session.id == id }) {
		if s.endAllocation(key, nil) {
			s.metrics.killed.WithLabelValues(killKill).Inc()
			return true
		}
	}
	return false
}

// Kill reasons, the "reason" label of traverse_relay_allocations_killed_total.
const (
	killKill    = "kill"
	killRevoked = "revoked"
)

// Revoked is the set of credentials the relay refuses: whole usernames,
// accounts (every username auth.AccountOf names), and API keys
// ("<AccountSid>:<auth.KeyTag>", every client-side username minted from an
// Access Token the key signed). The maps are never changed once handed to
// SetRevoked.
type Revoked struct {
	Users, Accounts, Keys map[string]bool
}

// names reports whether the revocation covers username.
func (r *Revoked) names(username string) bool {
	if r.Users[username] {
		return true
	}
	if len(r.Accounts) == 0 && len(r.Keys) == 0 {
		return false
	}
	_, user, err := auth.ParseUsername(username)
	if err != nil {
		return false
	}
	acct, ok := auth.AccountOf(user)
	if !ok {
		return false
	}
	if r.Accounts[acct] {
		return true
	}
	tag, ok := auth.KeyTagOf(user)
	return ok && r.Keys[acct+":"+tag]
}

func (s *Server) isRevoked(username string) bool {
	r := s.revoked.Load()
	return r != nil && r.names(username)
}

// SetRevoked replaces the revocations: from now on the relay refuses
// Allocate, Refresh, CreatePermission and ChannelBind with a username they
// name, and it tears down the live allocations made with one. It returns
// how many it tore down.
func (s *Server) SetRevoked(r *Revoked) int {
	s.revoked.Store(r)
	if r == nil {
		return 0
	}
	n := 0
	for _, key := range s.allocs.find(func(a *liveAllocation) bool { return r.names(a.username) }) {
		if s.endAllocation(key, nil) {
			n++
		}
	}
	s.metrics.killed.WithLabelValues(killRevoked).Add(float64(n))
	return n
}

// PortsInUse is the number of relay ports held by allocations, and the size
// of relay.ports.
func (s *Server) PortsInUse() (used, total int) {
	return s.allocs.len(), s.ports.Max - s.ports.Min + 1
}
