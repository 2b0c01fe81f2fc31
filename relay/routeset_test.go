package relay

import "testing"

// TestRouteSet: entries are found whether the set is a slice or has grown
// into a map, with and without leave the original untouched (the data path
// may be reading it), and replacing or removing works across the switch.
func TestRouteSet(t *testing.T) {
	var s routeSet[uint16, int]
	sets := []routeSet[uint16, int]{s}
	for i := range 2 * routeSetSmall {
		s = s.with(uint16(i), i)
		sets = append(sets, s)
	}
	for n, set := range sets {
		if set.len() != n {
			t.Fatalf("set %d holds %d entries", n, set.len())
		}
		for i := range 2 * routeSetSmall {
			v, ok := set.get(uint16(i))
			if want := i < n; ok != want || (ok && v != i) {
				t.Fatalf("set %d: get(%d) = %d, %v", n, i, v, ok)
			}
		}
	}
	if s.m == nil || sets[routeSetSmall].m != nil {
		t.Fatalf("a set becomes a map only beyond %d entries", routeSetSmall)
	}
	for _, set := range []routeSet[uint16, int]{sets[3], s} {
		r := set.with(1, 100).without(2)
		if v, _ := r.get(1); v != 100 {
			t.Errorf("replaced entry reads %d", v)
		}
		if _, ok := r.get(2); ok {
			t.Error("removed entry still there")
		}
		if v, _ := set.get(1); v != 1 {
			t.Error("with changed the original")
		}
		if _, ok := set.get(2); !ok {
			t.Error("without changed the original")
		}
		if r.len() != set.len()-1 {
			t.Errorf("len %d after replace and remove, want %d", r.len(), set.len()-1)
		}
	}
}
