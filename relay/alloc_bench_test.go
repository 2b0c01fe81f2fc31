package relay

import (
	"fmt"
	"net"
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

// BenchmarkAuthenticate is the relay's own share of authenticating a signed
// request, before the MESSAGE-INTEGRITY check: authenticate with one TURN
// REST secret. A fresh username per op, as in the allocation
// benchmark, so nothing is cached between ops.
func BenchmarkAuthenticate(b *testing.B) {
	cfg := testConfig()
	cfg.Listen.TCP, cfg.Listen.TLS = nil, nil
	r, err := New(Options{Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const n = 1024
	users := make([]string, n)
	for i := range users {
		users[i] = mint(&testing.T{}, testSecret, fmt.Sprintf("bench%d", i), time.Hour).Username
	}
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
	req := &request{src: src, local: local, key: allocKey(src, local)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key, why := r.authenticate(users[i%n], "traverse", req)
		if why != "" || len(key) != 16 {
			b.Fatal("refused")
		}
		i++
	}
}
