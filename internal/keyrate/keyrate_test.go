package keyrate

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiterBounded(t *testing.T) {
	l := New[netip.Addr](10, 2, 4)
	now := time.Unix(1000, 0)
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	for i := 0; i < 100; i++ {
		l.Spend(ip(i), now)
		if l.Len() > 4 {
			t.Fatalf("table grew to %d", l.Len())
		}
	}
	// The newest clients are kept.
	l.Spend(ip(99), now)
	if !l.Blocked(ip(99), now) {
		t.Fatal("the latest client lost its bucket")
	}
	// Refilled buckets are evicted first.
	later := now.Add(time.Second)
	l.Spend(ip(500), later)
	if l.Len() != 1 {
		t.Fatalf("size %d after every other bucket refilled, want 1", l.Len())
	}
}

func TestSourceIPv6Prefix(t *testing.T) {
	l := New[netip.Addr](10, 2, 100)
	now := time.Unix(1000, 0)
	l.Spend(Source(netip.MustParseAddr("2001:db8:1:2::1")), now)
	l.Spend(Source(netip.MustParseAddr("2001:db8:1:2::ffff")), now)
	if !l.Blocked(Source(netip.MustParseAddr("2001:db8:1:2:aaaa::1")), now) {
		t.Fatal("addresses of one /64 do not share a bucket")
	}
	if l.Blocked(Source(netip.MustParseAddr("2001:db8:1:3::1")), now) {
		t.Fatal("another /64 is blocked")
	}
	if l.Blocked(Source(netip.MustParseAddr("::ffff:10.0.0.1")), now) {
		t.Fatal("an unseen IPv4 is blocked")
	}
}

func TestAllowRefills(t *testing.T) {
	l := New[string](1, 2, 10)
	now := time.Unix(1000, 0)
	if !l.Allow("AC1", now) || !l.Allow("AC1", now) {
		t.Fatal("the burst was refused")
	}
	if l.Allow("AC1", now) {
		t.Fatal("over the burst was allowed")
	}
	if !l.Allow("AC2", now) {
		t.Fatal("another key was refused")
	}
	if !l.Allow("AC1", now.Add(time.Second)) {
		t.Fatal("a second later a token should be back")
	}
}
