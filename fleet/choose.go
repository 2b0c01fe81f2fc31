package fleet

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"

	"github.com/traverse/traverse/store"
)

// Regions maps client prefixes to regions (issuer.region_by_cidr); the
// longest matching prefix wins.
type Regions []RegionPrefix

// RegionPrefix is one entry of Regions.
type RegionPrefix struct {
	Prefix netip.Prefix
	Region string
}

// NewRegions sorts entries longest prefix first.
func NewRegions(entries []RegionPrefix) Regions {
	r := slices.Clone(entries)
	sort.SliceStable(r, func(i, j int) bool { return r[i].Prefix.Bits() > r[j].Prefix.Bits() })
	return r
}

// Of is the region of client, or "" when no prefix matches.
func (r Regions) Of(client netip.Addr) string {
	client = client.Unmap()
	for _, e := range r {
		if e.Prefix.Contains(client) {
			return e.Region
		}
	}
	return ""
}

// candidate is a node that may be handed out, with its load relative to
// weight: live allocations plus the credentials this issuer handed out for
// it lately (which have not shown up as allocations yet), over its weight.
type candidate struct {
	node  *store.Node
	score float64
}

// pick returns up to n candidates: those of the first region of prefer that
// has any (an empty region preference is skipped), else all; among them the
// lowest scores, ties broken uniformly at random so a burst of tokens
// spreads out. It scans n times rather than sorting: n is small (at most
// issuer.relays_per_token) and nothing is copied.
func pick(cands []candidate, n int, prefer []string, rnd *rand.Rand) []store.Node {
	region, all := "", true
	for _, r := range prefer {
		if r != "" && slices.ContainsFunc(cands, func(c candidate) bool { return c.node.Region == r }) {
			region, all = r, false
			break
		}
	}
	var out []store.Node
	taken := make([]bool, len(cands))
	for len(out) < n {
		best, ties := -1, 0
		for i, c := range cands {
			if taken[i] || (!all && c.node.Region != region) {
				continue
			}
			switch {
			case best < 0 || c.score < cands[best].score:
				best, ties = i, 1
			case c.score == cands[best].score:
				// Reservoir sampling: each of the tied is kept with equal chance.
				ties++
				if rnd.IntN(ties) == 0 {
					best = i
				}
			}
		}
		if best < 0 {
			break
		}
		taken[best] = true
		out = append(out, *cands[best].node)
	}
	return out
}
