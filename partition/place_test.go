package partition_test

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"

	"github.com/ringkv/ringkv/partition"
)

// modelScore is the score formula exactly as Place documents it.
func modelScore(id partition.ID, name string) uint64 {
	buf := binary.BigEndian.AppendUint32(nil, uint32(id))
	return xxhash.Sum64(append(buf, name...))
}

// modelPlace is the simplest reading of Place's contract: the distinct
// non-empty members ordered by score (highest first, ties by name), cut to r.
func modelPlace(id partition.ID, members []string, r int) []string {
	set := map[string]bool{}
	for _, m := range members {
		if m != "" {
			set[m] = true
		}
	}
	names := slices.Collect(maps.Keys(set))
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(modelScore(id, b), modelScore(id, a)), cmp.Compare(a, b))
	})
	return names[:max(0, min(r, len(names)))]
}

// nodes returns n member names node-00, node-01, ...
func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%02d", i)
	}
	return out
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name    string
		id      partition.ID
		members []string
		r       int
		wantLen int
	}{
		{name: "no members", members: nil, r: 3, wantLen: 0},
		{name: "zero replicas", members: nodes(5), r: 0, wantLen: 0},
		{name: "negative replicas", members: nodes(5), r: -1, wantLen: 0},
		{name: "single member", members: []string{"solo"}, r: 3, wantLen: 1},
		{name: "fewer members than replicas", id: 7, members: nodes(2), r: 3, wantLen: 2},
		{name: "exactly r members", id: 9, members: nodes(3), r: 3, wantLen: 3},
		{name: "more members than replicas", id: 11, members: nodes(10), r: 3, wantLen: 3},
		{name: "duplicates count once", id: 5, members: []string{"a", "b", "a", "b", "a"}, r: 3, wantLen: 2},
		{name: "empty name ignored", id: 5, members: []string{"", "a", "", "b"}, r: 3, wantLen: 2},
		{name: "only empty names", members: []string{"", ""}, r: 3, wantLen: 0},
		{name: "last partition id", id: partition.MaxPartitions - 1, members: nodes(7), r: 5, wantLen: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := slices.Clone(tt.members)
			got := partition.Place(tt.id, tt.members, tt.r)
			if len(got) != tt.wantLen {
				t.Fatalf("Place = %q, want %d replicas", got, tt.wantLen)
			}
			if want := modelPlace(tt.id, tt.members, tt.r); !slices.Equal(got, want) {
				t.Errorf("Place = %q, model says %q", got, want)
			}
			if !slices.Equal(tt.members, input) {
				t.Errorf("Place modified its input: %q became %q", input, tt.members)
			}
		})
	}
}

// TestPlaceGolden pins the score formula: these answers must never change,
// because every node of every existing cluster computes them, possibly in
// different releases. If this fails, the formula or xxhash changed.
func TestPlaceGolden(t *testing.T) {
	members := []string{"node-a", "node-b", "node-c", "node-d", "node-e"}
	tests := []struct {
		name string
		id   partition.ID
		want []string
	}{
		{name: "partition 0", id: 0, want: []string{"node-d", "node-b", "node-a"}},
		{name: "partition 1", id: 1, want: []string{"node-d", "node-a", "node-c"}},
		{name: "partition 63", id: 63, want: []string{"node-d", "node-b", "node-e"}},
		{name: "partition 65535", id: 65535, want: []string{"node-a", "node-e", "node-d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := partition.Place(tt.id, members, 3); !slices.Equal(got, tt.want) {
				t.Errorf("Place(%d) = %q, want %q", tt.id, got, tt.want)
			}
		})
	}
	if got, want := modelScore(1, "node-a"), uint64(0xb2e70422491f440c); got != want {
		t.Errorf("score(1, node-a) = %#x, want %#x", got, want)
	}
}

// memberNames draws member lists that mix short ASCII names, arbitrary strings
// and the empty name, to exercise normalization.
func memberNames(minLen, maxLen int) *rapid.Generator[[]string] {
	name := rapid.OneOf(rapid.StringMatching(`[a-z][a-z0-9-]{0,8}`), rapid.StringN(0, 6, -1))
	return rapid.SliceOfN(name, minLen, maxLen)
}

func TestPlaceProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		id := partition.ID(rapid.Uint32Range(0, partition.MaxPartitions-1).Draw(t, "id"))
		members := memberNames(0, 12).Draw(t, "members")
		r := rapid.IntRange(0, 8).Draw(t, "r")
		got := partition.Place(id, members, r)

		if want := modelPlace(id, members, r); !slices.Equal(got, want) {
			t.Fatalf("Place = %q, model says %q", got, want)
		}
		distinct := map[string]bool{}
		for _, m := range members {
			if m != "" {
				distinct[m] = true
			}
		}
		if want := min(r, len(distinct)); len(got) != max(0, want) {
			t.Fatalf("Place returned %d replicas, want min(r=%d, n=%d)", len(got), r, len(distinct))
		}
		seen := map[string]bool{}
		for _, g := range got {
			if !distinct[g] {
				t.Fatalf("Place returned %q, which is not a member", g)
			}
			if seen[g] {
				t.Fatalf("Place returned %q twice", g)
			}
			seen[g] = true
		}

		// Gossip may deliver the same set in any order and with repeats.
		extra := rapid.SliceOf(rapid.SampledFrom(append([]string{""}, members...))).Draw(t, "duplicates")
		shuffled := rapid.Permutation(append(slices.Clone(members), extra...)).Draw(t, "shuffled")
		if again := partition.Place(id, shuffled, r); !slices.Equal(got, again) {
			t.Fatalf("Place depends on input order or duplicates: %q vs %q", got, again)
		}
	})
}

func TestPlaceAll(t *testing.T) {
	tests := []struct {
		name    string
		p       int
		members []string
		r       int
	}{
		{name: "single partition", p: 1, members: nodes(3), r: 3},
		{name: "default layout", p: 64, members: nodes(5), r: 3},
		{name: "fewer members than replicas", p: 16, members: nodes(2), r: 3},
		{name: "no members", p: 8, members: nil, r: 3},
		{name: "zero replicas", p: 8, members: nodes(3), r: 0},
		{name: "duplicates and empty names", p: 32, members: []string{"b", "", "a", "b", "c", "a"}, r: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring := mustRing(t, tt.p)
			all := partition.PlaceAll(ring, tt.members, tt.r)
			if len(all) != tt.p {
				t.Fatalf("PlaceAll has %d entries, want one per partition (%d)", len(all), tt.p)
			}
			for i := range tt.p {
				id := partition.ID(i)
				got, ok := all[id]
				if !ok {
					t.Fatalf("partition %d missing", id)
				}
				if want := partition.Place(id, tt.members, tt.r); !slices.Equal(got, want) {
					t.Fatalf("partition %d: PlaceAll says %q, Place says %q", id, got, want)
				}
			}
		})
	}
}

// TestPlaceAllListsAreIndependent guards the shared backing array: a caller
// appending to one partition's list must not overwrite its neighbour.
func TestPlaceAllListsAreIndependent(t *testing.T) {
	all := partition.PlaceAll(mustRing(t, 4), nodes(5), 3)
	want := slices.Clone(all[1])
	all[0] = append(all[0], "intruder")
	if !slices.Equal(all[1], want) {
		t.Errorf("appending to partition 0 changed partition 1: %q became %q", want, all[1])
	}
}

func TestCount(t *testing.T) {
	tests := []struct {
		name string
		p    partition.Placement
		want map[string]int
	}{
		{name: "nil", p: nil, want: map[string]int{}},
		{name: "empty lists", p: partition.Placement{0: nil, 1: {}}, want: map[string]int{}},
		{
			name: "several partitions",
			p:    partition.Placement{0: {"a", "b"}, 1: {"b", "c"}, 2: {"c", "b"}},
			want: map[string]int{"a": 1, "b": 3, "c": 2},
		},
		{
			name: "duplicates and empty names ignored",
			p:    partition.Placement{0: {"a", "a", ""}, 1: {"a"}},
			want: map[string]int{"a": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Count(); !maps.Equal(got, tt.want) {
				t.Errorf("Count() = %v, want %v", got, tt.want)
			}
		})
	}
}

func BenchmarkPlace(b *testing.B) {
	for _, n := range []int{3, 5, 16, 100} {
		members := nodes(n)
		b.Run(fmt.Sprintf("n=%d/r=3", n), func(b *testing.B) {
			b.ReportAllocs()
			id := partition.ID(0)
			for b.Loop() {
				partition.Place(id, members, 3)
				id = (id + 1) % 64
			}
		})
	}
}

func BenchmarkPlaceAll(b *testing.B) {
	tests := []struct{ p, n int }{{64, 5}, {1024, 16}}
	for _, tt := range tests {
		ring, members := mustRing(b, tt.p), nodes(tt.n)
		b.Run(fmt.Sprintf("P=%d/n=%d/r=3", tt.p, tt.n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				partition.PlaceAll(ring, members, 3)
			}
		})
	}
}
