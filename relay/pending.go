package relay

import (
	"net"
	"net/netip"
	"sort"
	"sync"

	"go.uber.org/zap"
)

// pendingTable counts, per source (an IP, an IPv6 /64), the TCP/TLS
// connections that have not allocated yet, so that one source cannot fill
// a listener with idle connections (relay.limits.pending_per_ip).
type pendingTable struct {
	mu sync.Mutex
	m  map[netip.Addr]int
}

func newPendingTable() *pendingTable { return &pendingTable{m: map[netip.Addr]int{}} }

// add takes a pending slot of src, unless it already holds max (0: no cap).
func (p *pendingTable) add(src netip.Addr, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if max > 0 && p.m[src] >= max {
		return false
	}
	p.m[src]++
	return true
}

// remove frees a pending slot of src.
func (p *pendingTable) remove(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m[src]--; p.m[src] <= 0 {
		delete(p.m, src)
	}
}

func (p *pendingTable) count(src netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[src]
}

// listenerStopped records a stream listener whose accept loop ended on an
// error it cannot retry: /readyz names it until the process restarts.
func (s *Server) listenerStopped(transport string, addr net.Addr, err error) {
	name := transport + " " + addr.String()
	s.deadMu.Lock()
	s.dead[name] = err.Error()
	s.deadMu.Unlock()
	s.metrics.listenersStopped.Inc()
	s.log.Error("listener stopped: turn over "+transport+" is down on it until a restart",
		zap.String("listener", name), zap.Error(err))
}

// StoppedListeners names the TCP/TLS listeners that stopped accepting
// ("tcp 0.0.0.0:3478: <error>"), sorted; empty when all are serving.
func (s *Server) StoppedListeners() []string {
	s.deadMu.Lock()
	defer s.deadMu.Unlock()
	out := make([]string, 0, len(s.dead))
	for name, err := range s.dead {
		out = append(out, name+": "+err)
	}
	sort.Strings(out)
	return out
}
