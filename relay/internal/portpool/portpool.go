// Package portpool hands out the relay's UDP ports. It only keeps the
// numbers (it opens no socket) and must import nothing of traverse's.
package portpool

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Pool hands out relay ports in a random order and takes them back at
// the end of the queue, so a port freed by one allocation is the last to be
// reused (a late datagram from an old peer then rarely reaches a new
// allocation). Probing random ports instead costs a socket, a bind and a
// close for every port already taken: more the fuller the range.
//
// A port another socket holds (the bind failed) is set aside for busyHold
// before it is queued again, at a random place. Put back at the end, busy
// ports lined up behind each other cycle after cycle, until a run of them
// longer than the tries an allocation makes refused it with 508 while free
// ports were left. That happens: the default relay range overlaps the
// kernel's ephemeral ports, so it is shared with every UDP socket on the
// host.
type Pool struct {
	mu    sync.Mutex
	lo    int
	ring  []uint16 // a FIFO of free ports
	head  int
	n     int
	state []portState // by port-lo
	aside []busyPort  // oldest first
	now   func() time.Time
}

type portState uint8

const (
	portOut    portState = iota // held by an allocation, or being tried
	portQueued                  // in the ring
	portAside                   // another socket held it; in aside
)

type busyPort struct {
	port  uint16
	since time.Time
}

// busyHold is how long a port another socket held is left untried.
const busyHold = 30 * time.Second

// New makes a pool of the ports lo to hi, both included, in a random order.
func New(lo, hi int) *Pool {
	size := hi - lo + 1
	p := &Pool{lo: lo, ring: make([]uint16, size), state: make([]portState, size), now: time.Now}
	for i := range p.ring {
		p.ring[i] = uint16(lo + i)
		p.state[i] = portQueued
	}
	rand.Shuffle(size, func(i, j int) { p.ring[i], p.ring[j] = p.ring[j], p.ring[i] })
	p.n = size
	return p
}

// Get takes the next free port; false when none is left.
func (p *Pool) Get() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.aside) > 0 {
		now := p.now()
		for len(p.aside) > 0 && (now.Sub(p.aside[0].since) >= busyHold || p.n == 0) {
			port := int(p.aside[0].port)
			p.aside = p.aside[1:]
			p.state[port-p.lo] = portOut
			p.putLocked(port, true)
		}
	}
	if p.n == 0 {
		return 0, false
	}
	port := int(p.ring[p.head])
	p.head = (p.head + 1) % len(p.ring)
	p.n--
	p.state[port-p.lo] = portOut
	return port, true
}

// Put returns a port to the end of the queue (once, however often it is
// returned).
func (p *Pool) Put(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.putLocked(port, false)
}

// PutBusy sets aside a port that get handed out and another socket holds.
func (p *Pool) PutBusy(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := port - p.lo
	if i < 0 || i >= len(p.state) || p.state[i] != portOut {
		return
	}
	p.state[i] = portAside
	p.aside = append(p.aside, busyPort{port: uint16(port), since: p.now()})
}

// putLocked queues a port handed out, at the end or, anywhere, at a random
// place (the port there moving to the end).
func (p *Pool) putLocked(port int, anywhere bool) {
	i := port - p.lo
	if i < 0 || i >= len(p.state) || p.state[i] != portOut {
		return
	}
	p.state[i] = portQueued
	last := (p.head + p.n) % len(p.ring)
	p.ring[last] = uint16(port)
	p.n++
	if anywhere {
		other := (p.head + rand.IntN(p.n)) % len(p.ring)
		p.ring[last], p.ring[other] = p.ring[other], p.ring[last]
	}
}
