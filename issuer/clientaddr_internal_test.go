package issuer

import (
	"net/http"
	"net/netip"
	"testing"
)

// TestClientAddr: headers count only from trusted proxies, and then only up
// to the right-most entry that is not a trusted proxy.
func TestClientAddr(t *testing.T) {
	trusted := proxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")}
	for _, c := range []struct {
		name, peer string
		xff, fwd   []string
		proxies    proxies
		want       string
	}{
		{name: "no proxies configured: header ignored", peer: "10.0.0.1:5000", xff: []string{"198.51.100.9"}, want: "10.0.0.1"},
		{name: "untrusted peer: spoofed header ignored", peer: "203.0.113.5:5000", xff: []string{"198.51.100.9"}, proxies: trusted, want: "203.0.113.5"},
		{name: "untrusted peer: spoofed Forwarded ignored", peer: "203.0.113.5:5000", fwd: []string{"for=198.51.100.9"}, proxies: trusted, want: "203.0.113.5"},
		{name: "trusted proxy", peer: "10.0.0.1:5000", xff: []string{"198.51.100.9"}, proxies: trusted, want: "198.51.100.9"},
		{name: "chain: client-written entries to the left are ignored", peer: "10.0.0.1:5000", xff: []string{"6.6.6.6, 198.51.100.9, 10.0.0.7"}, proxies: trusted, want: "198.51.100.9"},
		{name: "chain over several header lines", peer: "10.0.0.1:5000", xff: []string{"6.6.6.6", "198.51.100.9, 10.2.0.1"}, proxies: trusted, want: "198.51.100.9"},
		{name: "all hops trusted: the left-most", peer: "10.0.0.1:5000", xff: []string{"10.9.9.9, 10.0.0.7"}, proxies: trusted, want: "10.9.9.9"},
		{name: "garbage stops at the last trusted hop", peer: "10.0.0.1:5000", xff: []string{"198.51.100.9, unknown, 10.0.0.7"}, proxies: trusted, want: "10.0.0.7"},
		{name: "trusted proxy without header", peer: "10.0.0.1:5000", proxies: trusted, want: "10.0.0.1"},
		{name: "Forwarded with ports, quotes and IPv6", peer: "[2001:db8:1::5]:443", fwd: []string{`for=6.6.6.6, for="[2001:db8:2::9]:4711";proto=https, for=10.1.1.1`}, proxies: trusted, want: "2001:db8:2::9"},
		{name: "Forwarded obfuscated hop", peer: "10.0.0.1:5000", fwd: []string{"for=198.51.100.9, for=_hidden"}, proxies: trusted, want: "10.0.0.1"},
		{name: "X-Forwarded-For wins over Forwarded", peer: "10.0.0.1:5000", xff: []string{"198.51.100.1"}, fwd: []string{"for=198.51.100.2"}, proxies: trusted, want: "198.51.100.1"},
		{name: "IPv4-mapped peer", peer: "[::ffff:10.0.0.1]:5000", xff: []string{"198.51.100.9:1234"}, proxies: trusted, want: "198.51.100.9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{proxies: c.proxies}
			r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			for _, v := range c.fwd {
				r.Header.Add("Forwarded", v)
			}
			if got := s.clientAddr(r); got != netip.MustParseAddr(c.want) {
				t.Fatalf("clientAddr = %s, want %s", got, c.want)
			}
		})
	}
}

// FuzzClientAddr: no header makes clientAddr panic, and an untrusted peer
// is always itself.
func FuzzClientAddr(f *testing.F) {
	f.Add("198.51.100.9, 10.0.0.7", `for="[2001:db8::1]:80"`)
	f.Add(",,,", "for=;for=")
	trusted := &Service{proxies: proxies{netip.MustParsePrefix("10.0.0.0/8")}}
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		h := http.Header{"X-Forwarded-For": {xff}, "Forwarded": {fwd}}
		trusted.clientAddr(&http.Request{RemoteAddr: "10.0.0.1:1", Header: h})
		if got := trusted.clientAddr(&http.Request{RemoteAddr: "203.0.113.1:1", Header: h}); got != netip.MustParseAddr("203.0.113.1") {
			t.Fatalf("untrusted peer became %s", got)
		}
	})
}
