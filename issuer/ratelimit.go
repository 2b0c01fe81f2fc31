package issuer

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed authentications allowed per client: failRate a second, in bursts of
// failBurst. A client over it gets 429 until its bucket refills; successful
// requests never spend from it. failTableSize bounds the memory.
const (
	failRate      = rate.Limit(10)
	failBurst     = 20
	failTableSize = 10000
)

// failLimiter rate-limits failed authentications per client address (IPv6 by
// /64, which one host usually holds whole).
type failLimiter struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	maxSize int
	idle    time.Duration // after this long without a failure a bucket is full again
	clients map[netip.Addr]*failBucket
}

type failBucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newFailLimiter(limit rate.Limit, burst, maxSize int) *failLimiter {
	return &failLimiter{
		limit:   limit,
		burst:   burst,
		maxSize: maxSize,
		idle:    time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		clients: make(map[netip.Addr]*failBucket),
	}
}

func clientKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// blocked reports whether ip has used up its failures.
func (l *failLimiter) blocked(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[clientKey(ip)]
	return b != nil && b.lim.TokensAt(now) < 1
}

// fail spends one failure of ip.
func (l *failLimiter) fail(ip netip.Addr, now time.Time) {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[key]
	if b == nil {
		if len(l.clients) >= l.maxSize {
			l.evict(now)
		}
		b = &failBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = b
	}
	b.lim.AllowN(now, 1)
	b.last = now
}

// evict drops the buckets that have refilled (they equal a fresh one); when
// none has, it drops the least recently failed.
func (l *failLimiter) evict(now time.Time) {
	var oldestKey netip.Addr
	var oldest time.Time
	for k, b := range l.clients {
		if now.Sub(b.last) >= l.idle {
			delete(l.clients, k)
			continue
		}
		if oldest.IsZero() || b.last.Before(oldest) {
			oldestKey, oldest = k, b.last
		}
	}
	if len(l.clients) >= l.maxSize {
		delete(l.clients, oldestKey)
	}
}

// size is the number of clients tracked.
func (l *failLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}
