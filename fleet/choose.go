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
	node  store.Node
	score float64
}

// pick returns up to n candidates: those of the first region of prefer that
// has any (an empty region preference is skipped), else all; among them the
// lowest scores, ties broken at random so a burst of tokens spreads out.
func pick(cands []candidate, n int, prefer []string, rnd *rand.Rand) []store.Node {
	pool := cands
	for _, region := range prefer {
		if region == "" {
			continue
		}
		var in []candidate
		for _, c := range cands {
			if c.node.Region == region {
				in = append(in, c)
			}
		}
		if len(in) > 0 {
			pool = in
			break
		}
	}
	pool = slices.Clone(pool)
	rnd.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	sort.SliceStable(pool, func(i, j int) bool { return pool[i].score < pool[j].score })
	out := make([]store.Node, 0, min(n, len(pool)))
	for _, c := range pool[:min(n, len(pool))] {
		out = append(out, c.node)
	}
	return out
}
