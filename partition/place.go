package partition

import (
	"encoding/binary"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Place returns the replicas of partition id: the r members with the highest
// rendezvous (HRW) score, highest first, so Place(...)[0] is a natural preferred
// leader. The score of member m for partition id is
//
//	xxhash64(bigEndianUint32(id) ‖ []byte(m))   // seed 0
//
// that is, xxhash64 (seed 0) of the 4-byte big-endian partition ID followed by
// the bytes of the name. The fixed-width prefix makes the (id, name) -> bytes
// encoding injective, so no two pairs hash the same input; xxhash64's final
// avalanche makes neighbouring IDs rank members independently. Equal scores
// (odds 2^-64) are broken by the smaller name, so the order stays total.
//
// The answer depends only on the member set: order and duplicates do not
// matter, and empty names are ignored. It holds min(r, n) distinct names, n
// being the number of distinct non-empty members; r <= 0 yields nil. The
// returned slice is new; members is not modified.
func Place(id ID, members []string, r int) []string {
	if r <= 0 {
		return nil
	}
	pl := newPlacer(members)
	return pl.top(id, r, make([]string, 0, min(r, len(pl.names))))
}

// Placement is the desired replica set of every partition, each list ordered
// as Place returns it.
type Placement map[ID][]string

// PlaceAll returns Place(id, members, r) for every partition of ring. Every
// partition has an entry, empty when there are no members or r <= 0. It sorts
// the members once and reuses its buffers, so it is much cheaper than P calls to
// Place. The lists share one backing array but are capped, so appending to one
// never overwrites another.
func PlaceAll(ring Ring, members []string, r int) Placement {
	p := ring.Partitions()
	pl := newPlacer(members)
	k := max(0, min(r, len(pl.names)))
	out := make(Placement, p)
	backing := make([]string, 0, p*k)
	for i := range p {
		from := len(backing)
		backing = pl.top(ID(i), k, backing)
		out[ID(i)] = backing[from:len(backing):len(backing)]
	}
	return out
}

// Count returns how many replicas each node holds in p. Nodes with no replica
// are absent. Like Diff, it reads each list as a set: a name listed twice for
// one partition counts once, and the empty name is ignored.
func (p Placement) Count() map[string]int {
	c := make(map[string]int)
	var seen []string
	for _, replicas := range p {
		seen = normalize(seen[:0], replicas)
		for _, n := range seen {
			c[n]++
		}
	}
	return c
}

// candidate is one member with its score for the partition being placed.
type candidate struct {
	name  string
	score uint64
}

// placer holds the normalized member set and scratch space, so placing many
// partitions allocates only for the results.
type placer struct {
	names []string // distinct, non-empty, sorted
	buf   []byte   // 4-byte ID prefix, then one name at a time
	cands []candidate
}

func newPlacer(members []string) placer {
	names := normalize(make([]string, 0, len(members)), members)
	longest := 0
	for _, n := range names {
		longest = max(longest, len(n))
	}
	return placer{
		names: names,
		buf:   make([]byte, 4, 4+longest),
		cands: make([]candidate, 0, len(names)),
	}
}

// top appends the r best members for id to dst, highest score first.
func (pl *placer) top(id ID, r int, dst []string) []string {
	r = min(r, len(pl.names))
	if r <= 0 {
		return dst
	}
	binary.BigEndian.PutUint32(pl.buf[:4], uint32(id))
	// Keep only the best r so far, sorted, by insertion: O(n*r) with r tiny
	// beats sorting all n scores, and placing every partition is the hot path.
	best := pl.cands[:0]
	for _, n := range pl.names {
		pl.buf = append(pl.buf[:4], n...)
		c := candidate{name: n, score: xxhash.Sum64(pl.buf)}
		if len(best) == r {
			if !c.beats(best[r-1]) {
				continue
			}
			best = best[:r-1]
		}
		i := len(best)
		best = append(best, c)
		for ; i > 0 && c.beats(best[i-1]); i-- {
			best[i] = best[i-1]
		}
		best[i] = c
	}
	for _, c := range best {
		dst = append(dst, c.name)
	}
	return dst
}

// beats reports whether c ranks above d. The name tie-break (for equal scores,
// odds 2^-64) makes the order total, so the result cannot depend on input order.
func (c candidate) beats(d candidate) bool {
	return c.score > d.score || (c.score == d.score && c.name < d.name)
}

// normalize appends to dst the distinct non-empty names of src, sorted. Sets,
// not lists, are what placement is defined on; sorting gives every node the
// same canonical form whatever order gossip delivered.
func normalize(dst, src []string) []string {
	start := len(dst)
	dst = append(dst, src...)
	s := dst[start:]
	slices.Sort(s)
	s = slices.Compact(s)
	if len(s) > 0 && s[0] == "" {
		s = s[1:]
		copy(dst[start:], s)
	}
	return dst[:start+len(s)]
}
