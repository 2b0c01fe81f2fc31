package relay

import (
	"iter"
	"maps"
)

// routeSet is an immutable small map for an allocation's routes (channels,
// permissions): a slice while it holds up to routeSetSmall entries, as
// nearly every allocation does, and a map beyond, so a client that makes
// thousands of permissions costs a lookup no more than a map's. A one-entry
// Go map takes about 500 bytes; a one-entry slice here, a few dozen: at
// 10,000 allocations that is most of what the data path's own tables cost
// (heap profile in docs/design.md).
type routeSet[K comparable, V any] struct {
	list []routeEntry[K, V]
	m    map[K]V
}

type routeEntry[K comparable, V any] struct {
	k K
	v V
}

// routeSetSmall is the most entries kept in a slice.
const routeSetSmall = 8

func (s routeSet[K, V]) get(k K) (V, bool) {
	if s.m != nil {
		v, ok := s.m[k]
		return v, ok
	}
	for i := range s.list {
		if s.list[i].k == k {
			return s.list[i].v, true
		}
	}
	var zero V
	return zero, false
}

func (s routeSet[K, V]) len() int {
	if s.m != nil {
		return len(s.m)
	}
	return len(s.list)
}

// with returns a copy holding k = v.
func (s routeSet[K, V]) with(k K, v V) routeSet[K, V] {
	if s.m != nil {
		m := maps.Clone(s.m)
		m[k] = v
		return routeSet[K, V]{m: m}
	}
	list := make([]routeEntry[K, V], 0, len(s.list)+1)
	for _, e := range s.list {
		if e.k != k {
			list = append(list, e)
		}
	}
	list = append(list, routeEntry[K, V]{k, v})
	if len(list) <= routeSetSmall {
		return routeSet[K, V]{list: list}
	}
	m := make(map[K]V, len(list))
	for _, e := range list {
		m[e.k] = e.v
	}
	return routeSet[K, V]{m: m}
}

// without returns a copy without k.
func (s routeSet[K, V]) without(k K) routeSet[K, V] {
	if s.m != nil {
		m := maps.Clone(s.m)
		delete(m, k)
		return routeSet[K, V]{m: m}
	}
	var list []routeEntry[K, V]
	for _, e := range s.list {
		if e.k != k {
			list = append(list, e)
		}
	}
	return routeSet[K, V]{list: list}
}

// all yields every entry.
func (s routeSet[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		if s.m != nil {
			for k, v := range s.m {
				if !yield(k, v) {
					return
				}
			}
			return
		}
		for _, e := range s.list {
			if !yield(e.k, e.v) {
				return
			}
		}
	}
}
