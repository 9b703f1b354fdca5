package partition

import (
	"cmp"
	"maps"
	"slices"
)

// Move is one replica that must be created on To and removed from From for
// partition Partition. From or To is "" when only an add or only a removal is
// needed. Executing a Move safely means adding To before removing From, so the
// partition never drops below its replica count.
type Move struct {
	Partition ID
	From, To  string
}

// Diff lists what changes between two placements, sorted by partition, then To,
// then From. Replica lists are read as sets: a replica present in both is not a
// move, so reordering (a different preferred leader) moves nothing. A partition
// missing from one side counts as having no replicas there. Within a partition,
// additions and removals are paired in name order; any pairing is a valid plan,
// pairing only keeps the replica count steady. Diff returns nil when nothing
// changes.
func Diff(before, after Placement) []Move {
	ids := slices.Collect(maps.Keys(before))
	for id := range after {
		if _, ok := before[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)

	var moves []Move
	var b, a []string
	for _, id := range ids {
		b = normalize(b[:0], before[id])
		a = normalize(a[:0], after[id])
		removed, added := minus(b, a), minus(a, b)
		for i := range max(len(removed), len(added)) {
			m := Move{Partition: id}
			if i < len(removed) {
				m.From = removed[i]
			}
			if i < len(added) {
				m.To = added[i]
			}
			moves = append(moves, m)
		}
	}
	slices.SortFunc(moves, func(x, y Move) int {
		return cmp.Or(cmp.Compare(x.Partition, y.Partition), cmp.Compare(x.To, y.To), cmp.Compare(x.From, y.From))
	})
	return moves
}

// minus returns the names of sorted set x that are not in sorted set y.
func minus(x, y []string) []string {
	var out []string
	for _, n := range x {
		if _, found := slices.BinarySearch(y, n); !found {
			out = append(out, n)
		}
	}
	return out
}
