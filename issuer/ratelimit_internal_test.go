package issuer

import (
	"net/netip"
	"testing"
	"time"
)

func TestFailLimiterBounded(t *testing.T) {
	l := newFailLimiter(10, 2, 4)
	now := time.Unix(1000, 0)
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	for i := 0; i < 100; i++ {
		l.fail(ip(i), now)
		if l.size() > 4 {
			t.Fatalf("table grew to %d", l.size())
		}
	}
	// The newest clients are kept.
	l.fail(ip(99), now)
	if !l.blocked(ip(99), now) {
		t.Fatal("the latest client lost its bucket")
	}
	// Refilled buckets are evicted first.
	later := now.Add(time.Second)
	l.fail(ip(500), later)
	if l.size() != 1 {
		t.Fatalf("size %d after every other bucket refilled, want 1", l.size())
	}
}

func TestFailLimiterIPv6Prefix(t *testing.T) {
	l := newFailLimiter(10, 2, 100)
	now := time.Unix(1000, 0)
	l.fail(netip.MustParseAddr("2001:db8:1:2::1"), now)
	l.fail(netip.MustParseAddr("2001:db8:1:2::ffff"), now)
	if !l.blocked(netip.MustParseAddr("2001:db8:1:2:aaaa::1"), now) {
		t.Fatal("addresses of one /64 do not share a bucket")
	}
	if l.blocked(netip.MustParseAddr("2001:db8:1:3::1"), now) {
		t.Fatal("another /64 is blocked")
	}
	if l.blocked(netip.MustParseAddr("::ffff:10.0.0.1"), now) {
		t.Fatal("an unseen IPv4 is blocked")
	}
}
