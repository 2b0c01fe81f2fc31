package config

import (
	"net"
	"net/netip"
)

// ExposedListeners lists the TURN listeners (as "listen.udp 0.0.0.0:3478")
// that are not bound to a loopback address, so that clients on other hosts
// can reach them. TLS listeners count only when a certificate is set, as
// only then are they bound. With any of them, loopback peers would let
// those clients relay into the host's own loopback services.
func (c Config) ExposedListeners() []string {
	var out []string
	add := func(kind string, addrs []string) {
		for _, a := range addrs {
			if !isLoopbackHostPort(a) {
				out = append(out, "listen."+kind+" "+a)
			}
		}
	}
	if !c.Relay.Enabled {
		return nil
	}
	add("udp", c.Listen.UDP)
	add("tcp", c.Listen.TCP)
	if c.TLS.Enabled() {
		add("tls", c.Listen.TLS)
	}
	return out
}

// isLoopbackHostPort reports whether addr ("host:port") binds loopback only;
// an empty or unspecified host binds every address.
func isLoopbackHostPort(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
