package relay

import (
	"container/list"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/traverse/traverse/internal/keyrate"
)

// boundedMap is a small cache for the relay's per-client notes (the signed
// requests kept for key selection, the refusal marks, the nonces pion
// issued). Every entry expires on its own; when the map is full the oldest
// entry goes. A source (an IP, an IPv6 /64) holds at most perSource entries
// and, over that, loses its own oldest: so a flood from one source can
// neither wipe the map nor push out another client's entry during its
// lifetime.
type boundedMap[V any] struct {
	mu        sync.Mutex
	max       int
	perSource int
	ttl       time.Duration
	order     *list.List // of *boundedEntry[V], oldest first
	byKey     map[string]*list.Element
	bySource  map[netip.Addr][]*list.Element // each source's entries, oldest first
}

type boundedEntry[V any] struct {
	key    string
	source netip.Addr
	at     time.Time
	v      V
}

func newBoundedMap[V any](max, perSource int, ttl time.Duration) *boundedMap[V] {
	return &boundedMap[V]{max: max, perSource: perSource, ttl: ttl, order: list.New(),
		byKey: map[string]*list.Element{}, bySource: map[netip.Addr][]*list.Element{}}
}

// put stores v under key (a srcKey, or one that starts with it), replacing
// an older value.
func (m *boundedMap[V]) put(key string, v V, now time.Time) {
	src := sourceOfKey(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.byKey[key]; ok {
		m.removeLocked(e)
	}
	m.expireLocked(now)
	if own := m.bySource[src]; len(own) >= m.perSource {
		m.removeLocked(own[0])
	} else if m.order.Len() >= m.max {
		m.removeLocked(m.order.Front())
	}
	e := m.order.PushBack(&boundedEntry[V]{key: key, source: src, at: now, v: v})
	m.byKey[key] = e
	m.bySource[src] = append(m.bySource[src], e)
}

// take removes and returns key's value if it has not expired.
func (m *boundedMap[V]) take(key string, now time.Time) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, v, ok := m.lookupLocked(key, now)
	if e != nil {
		m.removeLocked(e)
	}
	return v, ok
}

// get returns key's value if it has not expired, and keeps it.
func (m *boundedMap[V]) get(key string, now time.Time) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, v, ok := m.lookupLocked(key, now)
	return v, ok
}

// lookupLocked finds key's entry (nil if none) and its value, ok only when
// the entry has not expired.
func (m *boundedMap[V]) lookupLocked(key string, now time.Time) (*list.Element, V, bool) {
	var zero V
	e, found := m.byKey[key]
	if !found {
		return nil, zero, false
	}
	be := e.Value.(*boundedEntry[V])
	if now.Sub(be.at) >= m.ttl {
		return e, zero, false
	}
	return e, be.v, true
}

func (m *boundedMap[V]) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}

// expireLocked drops expired entries from the front (the oldest).
func (m *boundedMap[V]) expireLocked(now time.Time) {
	for e := m.order.Front(); e != nil; e = m.order.Front() {
		if now.Sub(e.Value.(*boundedEntry[V]).at) < m.ttl {
			return
		}
		m.removeLocked(e)
	}
}

func (m *boundedMap[V]) removeLocked(e *list.Element) {
	be := e.Value.(*boundedEntry[V])
	m.order.Remove(e)
	delete(m.byKey, be.key)
	own := m.bySource[be.source]
	for i, x := range own {
		if x == e {
			own = append(own[:i], own[i+1:]...)
			break
		}
	}
	if len(own) == 0 {
		delete(m.bySource, be.source)
	} else {
		m.bySource[be.source] = own
	}
}

// sourceOfKey is the source of a srcKey ("udp|ip:port", possibly followed by
// more): its IP, with an IPv6 address cut to its /64.
func sourceOfKey(key string) netip.Addr {
	_, rest, _ := strings.Cut(key, "|")
	if i := strings.IndexByte(rest, 0); i >= 0 {
		rest = rest[:i]
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		return netip.Addr{}
	}
	return keyrate.Source(ap.Addr())
}

// sourceOf is a client address's source: its IP, an IPv6 address cut to its
// /64 (one host, or one office, usually holds a whole /64).
func sourceOf(a net.Addr) netip.Addr {
	return keyrate.Source(addrPort(a).Addr())
}
