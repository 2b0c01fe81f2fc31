// Package keyrate keeps one token bucket (golang.org/x/time/rate) per key —
// a client's address, an account — in a table of bounded size. The relay
// uses it for failed TURN authentications per source, the issuer for failed
// HTTP authentications per client and for minting per account.
package keyrate

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a table of token buckets, one per key, each refilling at limit
// a second up to burst. When the table is full, buckets that have refilled
// (they equal a fresh one) are dropped first, else the least recently used.
type Limiter[K comparable] struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	maxSize int
	idle    time.Duration // after this long without a spend a bucket is full again
	buckets map[K]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

// New makes a Limiter of at most maxSize buckets.
func New[K comparable](limit rate.Limit, burst, maxSize int) *Limiter[K] {
	return &Limiter[K]{
		limit:   limit,
		burst:   burst,
		maxSize: maxSize,
		idle:    time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		buckets: make(map[K]*bucket),
	}
}

// Source is the key of a client address: the IP, with IPv6 cut to its /64,
// which one host (or one office) usually holds whole.
func Source(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// Blocked reports whether k has no token left, without spending one.
func (l *Limiter[K]) Blocked(k K, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	return b != nil && b.lim.TokensAt(now) < 1
}

// Spend takes one token of k if there is one (a failure counted).
func (l *Limiter[K]) Spend(k K, now time.Time) {
	l.Allow(k, now)
}

// Allow takes one token of k and reports whether there was one.
func (l *Limiter[K]) Allow(k K, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= l.maxSize {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[k] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

func (l *Limiter[K]) evict(now time.Time) {
	var oldestKey K
	var oldest time.Time
	for k, b := range l.buckets {
		if now.Sub(b.last) >= l.idle {
			delete(l.buckets, k)
			continue
		}
		if oldest.IsZero() || b.last.Before(oldest) {
			oldestKey, oldest = k, b.last
		}
	}
	if len(l.buckets) >= l.maxSize {
		delete(l.buckets, oldestKey)
	}
}

// Len is the number of keys tracked.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
