package relay

import (
	"testing"
	"time"
)

// BenchmarkAllocate measures an authenticated allocation and its release
// over UDP on loopback: the 401 round trip, the signed Allocate, and a
// Refresh with lifetime 0.
func BenchmarkAllocate(b *testing.B) {
	t := &testing.T{}
	cfg := testConfig()
	cfg.Relay.Quota.PerUser = 0
	r, err := New(Options{Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cred := mint(t, testSecret, "bench", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		c := newRawClientConn(r.Addrs().UDP[0], cred.Username, cred.Password)
		if _, err := c.Allocate(); err != nil {
			b.Fatal(err)
		}
		if err := c.Refresh(0); err != nil {
			b.Fatal(err)
		}
		_ = c.Conn.Close()
	}
}
