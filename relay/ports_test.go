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

// TestPortPoolBusyPorts: ports other sockets hold must not line up in the
// queue. Allocations take ports until 300 are held, skipping the 40 % another
// process holds, then release them all, cycle after cycle, a second apart;
// the longest run of busy ports one allocation meets stays far below the 64
// tries it makes. Put back at the end instead, the busy ports gathered into
// runs of over 200 within these cycles. A busy port is tried again after
// busyHold, and when nothing else is left.
func TestPortPoolBusyPorts(t *testing.T) {
	const lo, size = 40000, 1000
	p := newPortPool(lo, lo+size-1)
	clock := time.Unix(1700000000, 0)
	p.now = func() time.Time { return clock }
	busy := func(port int) bool { return (port*7919)%10 < 4 }
	longest, retried := 0, 0
	tried := map[int]bool{}
	for cycle := 0; cycle < 200; cycle++ {
		var held []int
		for len(held) < 300 {
			run := 0
			for {
				port, ok := p.get()
				if !ok {
					t.Fatalf("cycle %d: pool empty with %d held", cycle, len(held))
				}
				if !busy(port) {
					held = append(held, port)
					break
				}
				if tried[port] {
					retried++
				}
				tried[port] = true
				p.putBusy(port)
				run++
			}
			longest = max(longest, run)
		}
		for _, port := range held {
			p.put(port)
		}
		clock = clock.Add(time.Second)
	}
	t.Logf("longest run of busy ports: %d; busy ports tried again: %d", longest, retried)
	if longest >= 24 {
		t.Fatalf("an allocation met %d busy ports in a row", longest)
	}
	if retried == 0 {
		t.Fatal("no busy port was tried again after busyHold")
	}

	// With every free port held, the ports set aside are tried again at once.
	q := newPortPool(lo, lo+2)
	q.now = p.now
	a, _ := q.get()
	q.putBusy(a)
	b, _ := q.get()
	c, _ := q.get()
	if got, ok := q.get(); !ok || got != a {
		t.Fatalf("empty queue: got %d, %v; want the port set aside, %d", got, ok, a)
	}
	q.put(b)
	q.put(c)
	q.put(b)
	if got, _ := q.get(); got != b {
		t.Fatalf("got %d, want %d", got, b)
	}
}
