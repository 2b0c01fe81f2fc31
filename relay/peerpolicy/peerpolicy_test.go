package peerpolicy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/traverse/traverse/config"
)

// TestPeerPolicyBuiltinRanges tests every denied range by an address inside
// it, not Go's IsPrivate (which misses most of them).
func TestPeerPolicyBuiltinRanges(t *testing.T) {
	pp, err := New(config.Peers{}, SelfAddrs{})
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{
		// One address at each edge of every IPv4 range.
		"0.0.0.0", "0.255.255.255", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
		"127.0.0.1", "127.255.255.254", "169.254.169.254", "169.254.0.1", "172.16.0.1", "172.31.255.255",
		"192.0.0.1", "192.0.0.255", "192.0.2.1", "192.88.99.1", "192.168.0.1", "192.168.255.255",
		"198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.255",
		"240.0.0.1", "255.255.255.255",
		// IPv6 ranges.
		"::", "::1", "100::1", "2001:db8::1", "fc00::1", "fdff:ffff::1", "fe80::1", "febf::1",
		"fec0::1", "ff02::1",
		// The embedded-IPv4 forms (coturn CVE-2020-26262, CVE-2026-27624).
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
		"::127.0.0.1", "::ffff:0:a9fe:a9fe",
		"64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a00:1::1",
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
	}
	for _, s := range denied {
		if ok, why := pp.AllowIP(netip.MustParseAddr(s)); ok || why != DenyBuiltin {
			t.Errorf("%s: allowed=%v reason=%q, want denied (builtin)", s, ok, why)
		}
	}
	allowed := []string{
		"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
		"192.0.3.1", "198.17.255.255", "198.20.0.0", "223.255.255.255", "169.253.255.255",
		"2606:4700:4700::1111", "2a00:1450::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, s := range allowed {
		if ok, why := pp.AllowIP(netip.MustParseAddr(s)); !ok {
			t.Errorf("%s: denied (%s), want allowed", s, why)
		}
	}
}

func TestPeerPolicyLoopbackOnlyWhenAllowed(t *testing.T) {
	closed, _ := New(config.Peers{}, SelfAddrs{})
	open, _ := New(config.Peers{AllowLoopback: true}, SelfAddrs{})
	for _, s := range []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"} {
		ip := netip.MustParseAddr(s)
		if ok, _ := closed.AllowIP(ip); ok {
			t.Errorf("%s allowed without allow_loopback", s)
		}
		if ok, _ := open.AllowIP(ip); !ok {
			t.Errorf("%s denied with allow_loopback", s)
		}
	}
	// allow_loopback opens loopback only.
	if ok, _ := open.AllowIP(netip.MustParseAddr("10.0.0.1")); ok {
		t.Error("allow_loopback opened 10.0.0.1")
	}
}

func TestPeerPolicyAllowDenyConfig(t *testing.T) {
	pp, err := New(config.Peers{
		Allow: []string{"10.0.0.0/8", "::ffff:192.168.1.0/120"},
		Deny:  []string{"10.9.0.0/16", "8.8.4.4"},
	}, SelfAddrs{})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"10.1.2.3":         "",         // opened
		"::ffff:10.1.2.3":  "",         // opened, mapped form too
		"10.9.1.1":         DenyConfig, // deny wins over allow
		"8.8.4.4":          DenyConfig,
		"192.168.1.7":      "",
		"192.168.2.7":      DenyBuiltin,
		"8.8.8.8":          "",
		"64:ff9b::a09:101": DenyConfig, // NAT64 form of 10.9.1.1
	}
	for s, want := range cases {
		ok, why := pp.AllowIP(netip.MustParseAddr(s))
		if (want == "") != ok || why != want {
			t.Errorf("%s: allowed=%v reason=%q, want reason %q", s, ok, why, want)
		}
	}
}

// TestPeerPolicySelf: the server's own sockets are never peers, even when
// allow_loopback or relay.peers.allow covers their address.
func TestPeerPolicySelf(t *testing.T) {
	pp, err := New(config.Peers{AllowLoopback: true, Allow: []string{"203.0.113.0/24"}}, SelfAddrs{
		Listeners: []netip.AddrPort{
			netip.MustParseAddrPort("0.0.0.0:3478"),
			netip.MustParseAddrPort("127.0.0.1:9641"),
			netip.MustParseAddrPort("203.0.113.5:8080"),
		},
		HostIPs: []netip.Addr{netip.MustParseAddr("203.0.113.5")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"127.0.0.1:3478", "203.0.113.5:3478", "[::ffff:127.0.0.1]:3478", "127.0.0.1:9641", "203.0.113.5:8080"} {
		if ok, why := pp.AllowAddr(netip.MustParseAddrPort(s)); ok || why != DenySelf {
			t.Errorf("%s: allowed=%v reason=%q, want self", s, ok, why)
		}
	}
	for _, s := range []string{"127.0.0.1:5000", "203.0.113.5:50000", "203.0.113.6:3478"} {
		if ok, why := pp.AllowAddr(netip.MustParseAddrPort(s)); !ok {
			t.Errorf("%s: denied (%s)", s, why)
		}
	}
}

func TestPeerPolicyMalformedCIDRNamesField(t *testing.T) {
	_, err := New(config.Peers{Deny: []string{"10.0.0.0/8", "10.0.0.0/33"}}, SelfAddrs{})
	if err == nil || !strings.Contains(err.Error(), "relay.peers.deny[1]") {
		t.Fatalf("err = %v, want it to name relay.peers.deny[1]", err)
	}
}

func BenchmarkPeerPolicy(b *testing.B) {
	pp, _ := New(config.Peers{Allow: []string{"10.1.0.0/16"}, Deny: []string{"8.8.4.4"}}, SelfAddrs{
		Listeners: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3478")}})
	ap := netip.MustParseAddrPort("[2606:4700::1111]:5000")
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := pp.AllowAddr(ap); !ok {
			b.Fatal("denied")
		}
	}
}
