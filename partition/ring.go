package partition

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// MaxPartitions is the largest partition count a Ring accepts. Each partition is
// a Raft group, so far fewer are practical; the cap stops a typo from creating a
// cluster that can never start, and keeps every ID well inside uint32.
const MaxPartitions = 1 << 16

// ID names one partition, 0..P-1.
type ID uint32

// Ring is P partitions, each an equal contiguous range of the 64-bit xxhash64
// space. Partition i covers [Start(i), End(i)] inclusive, as returned by Range;
// the first starts at 0 and the last ends at math.MaxUint64.
//
// A hash h belongs to partition floor(h*P / 2^64). This is a range split (h is
// scaled, not reduced mod P) computed with one 64x64->128-bit multiply, so it
// needs no division and no lookup table. For a power-of-two P it equals the top
// log2(P) bits of h.
//
// Ring is a small value; copy it freely. The zero Ring has no partitions and is
// not usable: build one with NewRing.
type Ring struct {
	p uint64
}

// NewRing returns a ring of p partitions. p must be between 1 and
// MaxPartitions; otherwise the error wraps ErrInvalidPartitionCount.
func NewRing(p int) (Ring, error) {
	if p < 1 || p > MaxPartitions {
		return Ring{}, fmt.Errorf("%w: got %d, choose 1 to %d (a power of two such as 64 keeps later splits even)",
			ErrInvalidPartitionCount, p, MaxPartitions)
	}
	return Ring{p: uint64(p)}, nil
}

// Partitions returns P, the number of partitions.
func (r Ring) Partitions() int { return int(r.p) }

// Of returns the partition of key: the one whose range holds xxhash64(key).
// It does not allocate.
func (r Ring) Of(key []byte) ID { return r.OfHash(xxhash.Sum64(key)) }

// OfHash returns the partition whose range holds the hash h. Callers that
// already hashed the key (with xxhash.Sum64, seed 0) use it to hash only once.
func (r Ring) OfHash(h uint64) ID {
	hi, _ := bits.Mul64(h, r.p)
	return ID(hi)
}

// Range returns the inclusive hash bounds of partition id. The ranges of all
// partitions tile the 64-bit space in ID order with no gap and no overlap.
// Range panics if id >= P, like an out-of-range slice index: an ID is only
// valid for the ring that produced it.
func (r Ring) Range(id ID) (start, end uint64) {
	i := uint64(id)
	if i >= r.p {
		panic(fmt.Sprintf("partition: Range(%d) on a ring of %d partitions", id, r.p))
	}
	start = r.start(i)
	if i == r.p-1 {
		return start, math.MaxUint64
	}
	return start, r.start(i+1) - 1
}

// start returns the smallest h with floor(h*P / 2^64) == i, that is
// ceil(i * 2^64 / P). Deriving the bounds from the same formula as OfHash is
// what makes Range and OfHash agree exactly, with no rounding seam. i < P keeps
// Div64 from overflowing and the result below 2^64.
func (r Ring) start(i uint64) uint64 {
	q, rem := bits.Div64(i, 0, r.p)
	if rem != 0 {
		q++
	}
	return q
}
