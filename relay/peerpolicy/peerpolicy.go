// Package peerpolicy decides which peers a TURN allocation may reach: the
// built-in deny ranges, the operator's relay.peers allow and deny lists, and
// the server's own sockets. It is pure (no I/O) and imports only config;
// the relay asks it, it never imports the relay.
package peerpolicy

import (
	"fmt"
	"net/netip"

	"github.com/traverse/traverse/config"
)

// builtinDeny is what a TURN relay must never reach unless the operator opens
// it: private, loopback, link-local, shared, documentation, benchmark,
// multicast and reserved ranges. Go's netip IsPrivate misses most of these,
// so they are listed one by one.
var builtinDeny = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10",
	"fec0::/10", "ff00::/8",
	// Forms whose embedded IPv4 we do not unwrap: local-use NAT64 (RFC 8215,
	// the IPv4's position depends on the operator's prefix length) and Teredo
	// (the client address is obfuscated). Denied whole.
	"64:ff9b:1::/48", "2001::/32",
)

var loopback = mustPrefixes("127.0.0.0/8", "::1/128")

var (
	nat64    = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4   = netip.MustParsePrefix("2002::/16")
	v4Compat = netip.MustParsePrefix("::/96")
	v4Trans  = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated, RFC 2765
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Canonical returns the address a peer really is: IPv4-mapped, IPv4-compatible,
// IPv4-translated, NAT64 (64:ff9b::/96) and 6to4 forms become the IPv4 they
// embed, so that "::ffff:127.0.0.1" is judged as 127.0.0.1.
func Canonical(ip netip.Addr) netip.Addr {
	ip = ip.WithZone("")
	if ip.Is4In6() {
		return ip.Unmap()
	}
	if !ip.Is6() {
		return ip
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip), v4Trans.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case v4Compat.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixTo4.Contains(ip):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	}
	return ip
}

// Denial reasons, used as metric labels.
const (
	DenyBuiltin = "builtin"
	DenyConfig  = "config"
	DenySelf    = "self"
)

// Policy decides which peers an allocation may reach. Deny by default:
// the built-in ranges are refused unless relay.peers.allow opens them;
// relay.peers.deny always wins, and so do the server's own listener and
// admin addresses.
type Policy struct {
	allow, deny   []netip.Prefix
	allowLoopback bool
	// self holds the server's own ports and the addresses they answer on;
	// an unspecified address matches every address in selfIPs.
	selfPorts map[uint16][]netip.Addr
	selfIPs   map[netip.Addr]bool
}

// SelfAddrs describes the server's own sockets, which peers may never target.
type SelfAddrs struct {
	// Listeners are bound addresses (TURN, issuer, metrics); an unspecified
	// IP (0.0.0.0 or ::) stands for every address in HostIPs.
	Listeners []netip.AddrPort
	// HostIPs are this host's addresses, including the advertised public IP.
	HostIPs []netip.Addr
}

// New builds a policy from config; a malformed CIDR is an error
// naming its field.
func New(p config.Peers, self SelfAddrs) (*Policy, error) {
	pp := &Policy{allowLoopback: p.AllowLoopback, selfPorts: map[uint16][]netip.Addr{}, selfIPs: map[netip.Addr]bool{}}
	for i, s := range p.Allow {
		pr, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("relay.peers.allow[%d]: %w", i, err)
		}
		pp.allow = append(pp.allow, canonicalPrefix(pr))
	}
	for i, s := range p.Deny {
		pr, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("relay.peers.deny[%d]: %w", i, err)
		}
		pp.deny = append(pp.deny, canonicalPrefix(pr))
	}
	for _, ip := range self.HostIPs {
		pp.selfIPs[Canonical(ip)] = true
	}
	for _, l := range self.Listeners {
		pp.selfPorts[l.Port()] = append(pp.selfPorts[l.Port()], Canonical(l.Addr()))
	}
	return pp, nil
}

// canonicalPrefix turns "::ffff:10.0.0.0/104" into "10.0.0.0/8".
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p
}

// AllowIP reports whether a permission to ip may be installed, and if not, why.
func (pp *Policy) AllowIP(ip netip.Addr) (bool, string) {
	if !ip.IsValid() {
		return false, DenyBuiltin
	}
	ip = Canonical(ip)
	if containsAny(pp.deny, ip) {
		return false, DenyConfig
	}
	if containsAny(pp.allow, ip) {
		return true, ""
	}
	if pp.allowLoopback && containsAny(loopback, ip) {
		return true, ""
	}
	if containsAny(builtinDeny, ip) {
		return false, DenyBuiltin
	}
	return true, ""
}

// AllowAddr is AllowIP plus the port-level rule: a peer may never be one of
// the server's own sockets, whatever relay.peers.allow says. The relay checks
// it on every datagram it sends to a peer.
func (pp *Policy) AllowAddr(ap netip.AddrPort) (bool, string) {
	if ok, why := pp.AllowIP(ap.Addr()); !ok {
		return false, why
	}
	if pp.isSelf(ap) {
		return false, DenySelf
	}
	return true, ""
}

func (pp *Policy) isSelf(ap netip.AddrPort) bool {
	addrs, ok := pp.selfPorts[ap.Port()]
	if !ok {
		return false
	}
	ip := Canonical(ap.Addr())
	for _, a := range addrs {
		if a == ip {
			return true
		}
		if a.IsUnspecified() && (pp.selfIPs[ip] || ip.IsLoopback() || ip.IsUnspecified()) {
			return true
		}
	}
	return false
}

func containsAny(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
