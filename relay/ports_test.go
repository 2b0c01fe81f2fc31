package relay

import (
	"net"
	"testing"
	"time"
)

// TestPortPool: every port once, in no fixed order; a returned port comes
// back last; returning twice does not duplicate it.
func TestPortPool(t *testing.T) {
	p := newPortPool(5000, 5009)
	seen := map[int]bool{}
	var order []int
	for i := 0; i < 10; i++ {
		port, ok := p.get()
		if !ok || port < 5000 || port > 5009 || seen[port] {
			t.Fatalf("get %d = %d, %v (seen %v)", i, port, ok, seen)
		}
		seen[port] = true
		order = append(order, port)
	}
	if _, ok := p.get(); ok {
		t.Fatal("got a port from an empty pool")
	}
	p.put(order[3])
	p.put(order[3])
	p.put(order[7])
	if a, _ := p.get(); a != order[3] {
		t.Errorf("first back = %d, want %d", a, order[3])
	}
	if b, _ := p.get(); b != order[7] {
		t.Errorf("second back = %d, want %d", b, order[7])
	}
	if _, ok := p.get(); ok {
		t.Error("a port returned twice came out twice")
	}
	p.put(4999)
	p.put(5010)
	if _, ok := p.get(); ok {
		t.Error("a port outside the range was taken back")
	}
}

// TestRelayPortsReused: a range of three ports serves allocation after
// allocation as each is released, and skips a port another process holds.
func TestRelayPortsReused(t *testing.T) {
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	held := busy.LocalAddr().(*net.UDPAddr).Port
	cfg := testConfig()
	cfg.Relay.Ports.Min, cfg.Relay.Ports.Max = held-1, held+1
	r := startRelay(t, cfg, false)
	cred := mint(t, testSecret, "pat", time.Hour)
	for i := 0; i < 6; i++ {
		c := newRawClient(t, "udp", r.Addrs().UDP[0], cred.Username, cred.Password)
		relayed, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if int(relayed.Port()) == held {
			t.Fatalf("allocation %d got the port another socket holds", i)
		}
		if err := c.Refresh(0); err != nil {
			t.Fatal(err)
		}
	}
}
