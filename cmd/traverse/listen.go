package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/traverse/traverse/config"
)

// namedListeners records which listener lists the config file sets. Those it
// sets are used as written; the others are defaults that serve may adapt to
// the host: loopback under --dev, plus IPv6 when the host has it.
type namedListeners struct{ UDP, TCP, TLS bool }

// readNamedListeners reads which of listen.udp, listen.tcp and listen.tls the
// config file at path sets (none when path is "").
func readNamedListeners(path string) (namedListeners, error) {
	if path == "" {
		return namedListeners{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return namedListeners{}, fmt.Errorf("read config: %w", err)
	}
	var doc struct {
		Listen struct {
			UDP *[]string `yaml:"udp"`
			TCP *[]string `yaml:"tcp"`
			TLS *[]string `yaml:"tls"`
		} `yaml:"listen"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return namedListeners{}, fmt.Errorf("%s: %w", path, err)
	}
	return namedListeners{UDP: doc.Listen.UDP != nil, TCP: doc.Listen.TCP != nil, TLS: doc.Listen.TLS != nil}, nil
}

// each calls f on every listener list the config file leaves at its default.
func (n namedListeners) each(l *config.Listen, f func(kind string, addrs *[]string)) {
	if !n.UDP {
		f("udp", &l.UDP)
	}
	if !n.TCP {
		f("tcp", &l.TCP)
	}
	if !n.TLS {
		f("tls", &l.TLS)
	}
}

// onHosts puts every port of addrs on each of hosts, keeping the order.
func onHosts(addrs []string, hosts ...string) []string {
	var out []string
	for _, a := range addrs {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			out = append(out, a) // Validate reports it
			continue
		}
		for _, h := range hosts {
			out = append(out, net.JoinHostPort(h, port))
		}
	}
	return out
}

// withIPv6 adds "[::]:port" beside each "0.0.0.0:port" that has no IPv6 twin.
func withIPv6(addrs []string) []string {
	out := append([]string(nil), addrs...)
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host != "0.0.0.0" {
			continue
		}
		v6 := net.JoinHostPort("::", port)
		if !slices.Contains(out, v6) {
			out = append(out, v6)
		}
	}
	return out
}

// ipv6Decision says whether the default listeners should add IPv6 ("[::]")
// twins on a host with these interface addresses, and if not, why. Only a
// global address counts: with link-local or unique-local ones alone, no
// IPv6-only client on the Internet could reach us anyway.
func ipv6Decision(hostAddrs []netip.Addr) (on bool, why string) {
	anyV6 := false
	for _, a := range hostAddrs {
		if !a.Is6() || a.Is4In6() {
			continue
		}
		anyV6 = true
		if a.IsGlobalUnicast() && !a.IsPrivate() {
			return true, "the host has the global IPv6 address " + a.String()
		}
	}
	if !anyV6 {
		return false, "the host has no IPv6 address"
	}
	return false, "the host has no global IPv6 address (only loopback, link-local or unique-local ones)"
}

// applyIPv6Default adds "[::]" listeners beside the default "0.0.0.0" ones
// when the host has a global IPv6 address, for IPv6-only clients (common on
// mobile networks). Listener lists the config file sets are left alone.
// Relay addresses stay IPv4 either way. It returns the start-up note that
// says what was decided and why; "" when nothing was left to decide.
func applyIPv6Default(cfg *config.Config, named namedListeners, hostAddrs []netip.Addr) string {
	// TLS listeners are bound only with a certificate: without one, an
	// unnamed TLS list decides nothing worth a note.
	if !cfg.Relay.Enabled || (named.UDP && named.TCP && (named.TLS || !cfg.TLS.Enabled())) {
		return ""
	}
	on, why := ipv6Decision(hostAddrs)
	if !on {
		return "ipv6 listeners off: " + why + "; name [::] addresses in listen.udp, listen.tcp and listen.tls to listen on IPv6 anyway"
	}
	var added []string
	named.each(&cfg.Listen, func(kind string, addrs *[]string) {
		before := len(*addrs)
		*addrs = withIPv6(*addrs)
		if kind == "tls" && !cfg.TLS.Enabled() {
			return // added, but not bound: not worth saying
		}
		for _, a := range (*addrs)[before:] {
			added = append(added, "listen."+kind+" "+a)
		}
	})
	if len(added) == 0 {
		return ""
	}
	return "ipv6 listeners on: " + why + ": " + strings.Join(added, ", ") + " (relay addresses stay IPv4)"
}

// hostAddrs lists this host's interface addresses.
func hostAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, ip)
			}
		}
	}
	return out
}

// hasIPv6Loopback reports whether ::1 can be bound (containers may run with
// IPv6 turned off).
func hasIPv6Loopback() bool {
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
