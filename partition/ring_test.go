package partition_test

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"

	"github.com/ringkv/ringkv/partition"
)

// fataler is what both *testing.T and *rapid.T offer to helpers.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// mustRing builds a ring or fails the test.
func mustRing(tb fataler, p int) partition.Ring {
	tb.Helper()
	ring, err := partition.NewRing(p)
	if err != nil {
		tb.Fatalf("NewRing(%d): %v", p, err)
	}
	return ring
}

// twoTo64 is 2^64, the size of the hash space, for the big-integer models.
var twoTo64 = new(big.Int).Lsh(big.NewInt(1), 64)

// modelOf is the definition of OfHash in exact arithmetic: floor(h*P / 2^64).
func modelOf(h uint64, p int) partition.ID {
	x := new(big.Int).Mul(new(big.Int).SetUint64(h), big.NewInt(int64(p)))
	return partition.ID(x.Div(x, twoTo64).Uint64())
}

// modelStart is the first hash of partition i in exact arithmetic: ceil(i*2^64 / P).
func modelStart(i, p int) uint64 {
	x := new(big.Int).Mul(big.NewInt(int64(i)), twoTo64)
	x.Add(x, big.NewInt(int64(p-1)))
	return x.Div(x, big.NewInt(int64(p))).Uint64()
}

func TestNewRing(t *testing.T) {
	tests := []struct {
		name    string
		p       int
		wantErr bool
	}{
		{name: "negative", p: -1, wantErr: true},
		{name: "zero", p: 0, wantErr: true},
		{name: "one", p: 1},
		{name: "three", p: 3},
		{name: "default 64", p: 64},
		{name: "max", p: partition.MaxPartitions},
		{name: "one above max", p: partition.MaxPartitions + 1, wantErr: true},
		{name: "huge", p: math.MaxInt, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := partition.NewRing(tt.p)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("NewRing(%d): %v", tt.p, err)
				}
				if got := ring.Partitions(); got != tt.p {
					t.Errorf("Partitions() = %d, want %d", got, tt.p)
				}
				return
			}
			if !errors.Is(err, partition.ErrInvalidPartitionCount) {
				t.Fatalf("NewRing(%d) error = %v, want ErrInvalidPartitionCount", tt.p, err)
			}
			// The message must tell the user what to pick, so it names the limit.
			if !strings.Contains(err.Error(), strconv.Itoa(partition.MaxPartitions)) {
				t.Errorf("error %q does not name the limit %d", err, partition.MaxPartitions)
			}
			if ring.Partitions() != 0 {
				t.Errorf("failed NewRing returned a ring of %d partitions", ring.Partitions())
			}
		})
	}
}

// TestRangesTile walks every partition of several rings and checks the ranges
// cover the 64-bit space in order, without gap or overlap, with equal sizes
// (within one hash value), agreeing with OfHash and the exact model at every
// boundary.
func TestRangesTile(t *testing.T) {
	for _, p := range []int{1, 2, 3, 7, 64, 100, 1000, 4096, 65535, partition.MaxPartitions} {
		t.Run(fmt.Sprintf("P=%d", p), func(t *testing.T) {
			ring := mustRing(t, p)
			var next uint64 // first hash not yet covered
			minW, maxW := uint64(math.MaxUint64), uint64(0)
			for i := range p {
				id := partition.ID(i)
				start, end := ring.Range(id)
				if start != next {
					t.Fatalf("partition %d starts at %#x, want %#x (gap or overlap)", i, start, next)
				}
				if end < start {
					t.Fatalf("partition %d is empty: [%#x, %#x]", i, start, end)
				}
				if want := modelStart(i, p); start != want {
					t.Fatalf("partition %d starts at %#x, model says %#x", i, start, want)
				}
				if ring.OfHash(start) != id || ring.OfHash(end) != id {
					t.Fatalf("partition %d: OfHash(start)=%d OfHash(end)=%d", i, ring.OfHash(start), ring.OfHash(end))
				}
				w := end - start // width-1, so P=1 does not overflow
				minW, maxW = min(minW, w), max(maxW, w)
				next = end + 1
				if i == p-1 && end != math.MaxUint64 {
					t.Fatalf("last partition ends at %#x, want MaxUint64", end)
				}
			}
			if maxW-minW > 1 {
				t.Errorf("partition widths differ by %d, want at most 1", maxW-minW)
			}
		})
	}
}

// TestSplitNests checks the promise that ranges keep a split possible: the k
// children k*i..k*i+k-1 of a ring of k*P partitions tile parent i exactly.
func TestSplitNests(t *testing.T) {
	tests := []struct {
		name string
		p, k int
	}{
		{name: "1 into 2", p: 1, k: 2},
		{name: "3 into 6", p: 3, k: 2},
		{name: "7 into 21", p: 7, k: 3},
		{name: "64 into 256", p: 64, k: 4},
		{name: "1000 into 65000", p: 1000, k: 65},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, child := mustRing(t, tt.p), mustRing(t, tt.p*tt.k)
			for i := range tt.p {
				ps, pe := parent.Range(partition.ID(i))
				cs, _ := child.Range(partition.ID(i * tt.k))
				_, ce := child.Range(partition.ID(i*tt.k + tt.k - 1))
				if cs != ps || ce != pe {
					t.Fatalf("parent %d is [%#x, %#x], children span [%#x, %#x]", i, ps, pe, cs, ce)
				}
			}
		})
	}
}

// TestOfHashMatchesModel checks the fast multiply against exact arithmetic for
// random hashes and partition counts, biased towards the edges.
func TestOfHashMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := rapid.OneOf(rapid.SampledFrom([]int{1, 2, 3, 64, partition.MaxPartitions}),
			rapid.IntRange(1, partition.MaxPartitions)).Draw(t, "p")
		h := rapid.OneOf(rapid.SampledFrom([]uint64{0, 1, math.MaxUint64 - 1, math.MaxUint64}),
			rapid.Uint64()).Draw(t, "h")
		ring := mustRing(t, p)
		got := ring.OfHash(h)
		if want := modelOf(h, p); got != want {
			t.Fatalf("OfHash(%#x) with P=%d = %d, model says %d", h, p, got, want)
		}
		if start, end := ring.Range(got); h < start || h > end {
			t.Fatalf("hash %#x outside its partition %d [%#x, %#x]", h, got, start, end)
		}
	})
}

// TestOfKeyLandsInExactlyOnePartition hashes random keys and checks that the
// key's hash lies in the range of the partition Of names and in no other.
func TestOfKeyLandsInExactlyOnePartition(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := rapid.OneOf(rapid.SampledFrom([]int{1, 3, 64, partition.MaxPartitions}),
			rapid.IntRange(1, 4096)).Draw(t, "p")
		key := rapid.SliceOf(rapid.Byte()).Draw(t, "key")
		ring := mustRing(t, p)
		h := xxhash.Sum64(key)
		id := ring.Of(key)
		if want := ring.OfHash(h); id != want {
			t.Fatalf("Of = %d, OfHash(xxhash.Sum64(key)) = %d", id, want)
		}
		if int(id) >= p {
			t.Fatalf("Of = %d, beyond P = %d", id, p)
		}
		// Counting over every partition is the literal statement; for the
		// largest ring the neighbours suffice because TestRangesTile proved tiling.
		lo, hi := 0, p-1
		if p > 4096 {
			lo, hi = max(0, int(id)-1), min(p-1, int(id)+1)
		}
		holders := 0
		for i := lo; i <= hi; i++ {
			if start, end := ring.Range(partition.ID(i)); start <= h && h <= end {
				holders++
				if partition.ID(i) != id {
					t.Fatalf("hash %#x in partition %d, but Of says %d", h, i, id)
				}
			}
		}
		if holders != 1 {
			t.Fatalf("hash %#x lies in %d partitions, want 1", h, holders)
		}
	})
}

func TestRangePanicsOnForeignID(t *testing.T) {
	ring := mustRing(t, 8)
	defer func() {
		if recover() == nil {
			t.Fatal("Range(8) on a ring of 8 did not panic")
		}
	}()
	ring.Range(8)
}

func TestOfDoesNotAllocate(t *testing.T) {
	ring := mustRing(t, 64)
	key := []byte("user:1234567890")
	var sink partition.ID
	if n := testing.AllocsPerRun(100, func() { sink = ring.Of(key) }); n != 0 {
		t.Errorf("Of allocates %v times per call, want 0", n)
	}
	_ = sink
}

func BenchmarkOf(b *testing.B) {
	ring := mustRing(b, 64)
	for _, size := range []int{16, 64, 1024} {
		key := []byte(strings.Repeat("k", size))
		b.Run(fmt.Sprintf("key=%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				ring.Of(key)
			}
		})
	}
}

func BenchmarkOfHash(b *testing.B) {
	ring := mustRing(b, 1000)
	h := uint64(0x9e3779b97f4a7c15)
	for b.Loop() {
		ring.OfHash(h)
	}
}
