package relay

import (
	"math/rand/v2"
	"sync"
)

// portPool hands out relay ports in a random order and takes them back at
// the end of the queue, so a port freed by one allocation is the last to be
// reused (a late datagram from an old peer then rarely reaches a new
// allocation). Probing random ports instead costs a socket, a bind and a
// close for every port already taken: more the fuller the range.
type portPool struct {
	mu     sync.Mutex
	lo     int
	ring   []uint16 // a FIFO of free ports
	head   int
	n      int
	queued []bool // by port-lo: in the ring
}

func newPortPool(lo, hi int) *portPool {
	size := hi - lo + 1
	p := &portPool{lo: lo, ring: make([]uint16, size), queued: make([]bool, size)}
	for i := range p.ring {
		p.ring[i] = uint16(lo + i)
	}
	rand.Shuffle(size, func(i, j int) { p.ring[i], p.ring[j] = p.ring[j], p.ring[i] })
	for i := range p.queued {
		p.queued[i] = true
	}
	p.n = size
	return p
}

// get takes the next free port; false when none is left.
func (p *portPool) get() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return 0, false
	}
	port := int(p.ring[p.head])
	p.head = (p.head + 1) % len(p.ring)
	p.n--
	p.queued[port-p.lo] = false
	return port, true
}

// put returns a port to the end of the queue (once, however often it is
// returned).
func (p *portPool) put(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := port - p.lo
	if i < 0 || i >= len(p.queued) || p.queued[i] {
		return
	}
	p.queued[i] = true
	p.ring[(p.head+p.n)%len(p.ring)] = uint16(port)
	p.n++
}
