package portpool

import (
	"testing"
	"time"
)

// TestPortPool: every port once, in no fixed order; a returned port comes
// back last; returning twice does not duplicate it.
func TestPortPool(t *testing.T) {
	p := New(5000, 5009)
	seen := map[int]bool{}
	var order []int
	for i := 0; i < 10; i++ {
		port, ok := p.Get()
		if !ok || port < 5000 || port > 5009 || seen[port] {
			t.Fatalf("get %d = %d, %v (seen %v)", i, port, ok, seen)
		}
		seen[port] = true
		order = append(order, port)
	}
	if _, ok := p.Get(); ok {
		t.Fatal("got a port from an empty pool")
	}
	p.Put(order[3])
	p.Put(order[3])
	p.Put(order[7])
	if a, _ := p.Get(); a != order[3] {
		t.Errorf("first back = %d, want %d", a, order[3])
	}
	if b, _ := p.Get(); b != order[7] {
		t.Errorf("second back = %d, want %d", b, order[7])
	}
	if _, ok := p.Get(); ok {
		t.Error("a port returned twice came out twice")
	}
	p.Put(4999)
	p.Put(5010)
	if _, ok := p.Get(); ok {
		t.Error("a port outside the range was taken back")
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
	p := New(lo, lo+size-1)
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
				port, ok := p.Get()
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
				p.PutBusy(port)
				run++
			}
			longest = max(longest, run)
		}
		for _, port := range held {
			p.Put(port)
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
	q := New(lo, lo+2)
	q.now = p.now
	a, _ := q.Get()
	q.PutBusy(a)
	b, _ := q.Get()
	c, _ := q.Get()
	if got, ok := q.Get(); !ok || got != a {
		t.Fatalf("empty queue: got %d, %v; want the port set aside, %d", got, ok, a)
	}
	q.Put(b)
	q.Put(c)
	q.Put(b)
	if got, _ := q.Get(); got != b {
		t.Fatalf("got %d, want %d", got, b)
	}
}
