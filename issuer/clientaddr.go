package issuer

import (
	"net/http"
	"net/netip"
	"strings"
)

// This file is the one place the issuer decides who a request comes from:
// the rate limiter, the logs and the relay choice all use clientAddr.

// proxies is the set of trusted reverse proxies (issuer.trusted_proxies).
type proxies []netip.Prefix

func (p proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pfx := range p {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// maxForwardedHops bounds the entries read from a forwarding header.
const maxForwardedHops = 32

// clientAddr is the address a request comes from. From a peer that is not
// a trusted proxy it is the TCP peer, whatever headers say. From a trusted
// proxy it is the right-most entry of X-Forwarded-For (else of Forwarded's
// for= parameters) that is not itself a trusted proxy: entries to its left
// were written by the client and cannot be believed. An entry that does not
// parse (a port-less name, "unknown", an obfuscated identifier) stops the
// walk at the last trusted hop, as does a header with too many entries.
func (s *Service) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	peer := ap.Addr().Unmap()
	if len(s.proxies) == 0 || !s.proxies.trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	if len(hops) > maxForwardedHops {
		return peer
	}
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return addr
		}
		addr = a
		if !s.proxies.trusted(a) {
			return a
		}
	}
	return addr
}

// forwardedFor lists the hops of X-Forwarded-For (every header line, in
// order), else the for= values of Forwarded (RFC 7239).
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("X-Forwarded-For") {
		for _, e := range strings.Split(line, ",") {
			hops = append(hops, strings.TrimSpace(e))
		}
	}
	if len(hops) > 0 {
		return hops
	}
	for _, line := range h.Values("Forwarded") {
		for _, elem := range strings.Split(line, ",") {
			v := ""
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					v = val
				}
			}
			// An element without for= is a hop we cannot place.
			hops = append(hops, v)
		}
	}
	return hops
}

// parseHop reads one hop: "192.0.2.1", "192.0.2.1:4711", "2001:db8::1",
// "[2001:db8::1]:4711", optionally in double quotes (Forwarded).
func parseHop(v string) (netip.Addr, bool) {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if a, err := netip.ParseAddr(v); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.Addr().Unmap(), true
	}
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		if a, err := netip.ParseAddr(v[1 : len(v)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}
