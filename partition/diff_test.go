package partition_test

import (
	"cmp"
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/ringkv/ringkv/partition"
)

func TestDiff(t *testing.T) {
	tests := []struct {
		name          string
		before, after partition.Placement
		want          []partition.Move
	}{
		{name: "both nil", want: nil},
		{
			name:   "identical",
			before: partition.Placement{0: {"a", "b", "c"}, 1: {"b", "c", "d"}},
			after:  partition.Placement{0: {"a", "b", "c"}, 1: {"b", "c", "d"}},
			want:   nil,
		},
		{
			name:   "reorder is not a move",
			before: partition.Placement{0: {"a", "b", "c"}},
			after:  partition.Placement{0: {"c", "a", "b"}},
			want:   nil,
		},
		{
			name:   "replace one replica",
			before: partition.Placement{3: {"a", "b", "c"}},
			after:  partition.Placement{3: {"a", "d", "c"}},
			want:   []partition.Move{{Partition: 3, From: "b", To: "d"}},
		},
		{
			name:   "add only",
			before: partition.Placement{0: {"a"}},
			after:  partition.Placement{0: {"a", "b"}},
			want:   []partition.Move{{Partition: 0, To: "b"}},
		},
		{
			name:   "remove only",
			before: partition.Placement{0: {"a", "b"}},
			after:  partition.Placement{0: {"b"}},
			want:   []partition.Move{{Partition: 0, From: "a"}},
		},
		{
			name:   "partition only before",
			before: partition.Placement{5: {"a", "b"}},
			after:  partition.Placement{},
			want:   []partition.Move{{Partition: 5, From: "a"}, {Partition: 5, From: "b"}},
		},
		{
			name:   "partition only after",
			before: nil,
			after:  partition.Placement{2: {"b", "a"}},
			want:   []partition.Move{{Partition: 2, To: "a"}, {Partition: 2, To: "b"}},
		},
		{
			name:   "pairs in name order, extras unpaired",
			before: partition.Placement{0: {"z", "y", "x"}},
			after:  partition.Placement{0: {"b", "a"}},
			want: []partition.Move{
				{Partition: 0, From: "z"},
				{Partition: 0, From: "x", To: "a"},
				{Partition: 0, From: "y", To: "b"},
			},
		},
		{
			name:   "sorted by partition then To then From",
			before: partition.Placement{9: {"a"}, 1: {"c", "d"}, 4: {"x"}},
			after:  partition.Placement{9: {"b"}, 1: {"e", "b"}, 4: {"x"}},
			want: []partition.Move{
				{Partition: 1, From: "c", To: "b"},
				{Partition: 1, From: "d", To: "e"},
				{Partition: 9, From: "a", To: "b"},
			},
		},
		{
			name:   "duplicates and empty names ignored",
			before: partition.Placement{0: {"a", "a", ""}},
			after:  partition.Placement{0: {"", "a", "b", "b"}},
			want:   []partition.Move{{Partition: 0, To: "b"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := partition.Diff(tt.before, tt.after); !slices.Equal(got, tt.want) {
				t.Errorf("Diff =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

// replicaSets turns a placement into comparable sets, dropping empty lists.
func replicaSets(p partition.Placement) map[partition.ID]map[string]bool {
	out := map[partition.ID]map[string]bool{}
	for id, replicas := range p {
		for _, r := range replicas {
			if r == "" {
				continue
			}
			if out[id] == nil {
				out[id] = map[string]bool{}
			}
			out[id][r] = true
		}
	}
	return out
}

func setsEqual(a, b map[partition.ID]map[string]bool) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]bool) bool { return maps.Equal(x, y) })
}

// TestDiffApplies checks Diff against its meaning: executing its moves on the
// before sets yields the after sets, with no wasted step and in the promised order.
func TestDiffApplies(t *testing.T) {
	placement := rapid.MapOfN(
		rapid.Custom(func(t *rapid.T) partition.ID { return partition.ID(rapid.Uint32Range(0, 7).Draw(t, "id")) }),
		rapid.SliceOfN(rapid.SampledFrom([]string{"", "a", "b", "c", "d", "e", "f"}), 0, 5),
		0, 8)
	rapid.Check(t, func(t *rapid.T) {
		before, after := placement.Draw(t, "before"), placement.Draw(t, "after")
		moves := partition.Diff(before, after)

		state := replicaSets(before)
		for _, m := range moves {
			if m.From == m.To {
				t.Fatalf("useless move %+v", m)
			}
			set := state[m.Partition]
			if m.From != "" {
				if !set[m.From] {
					t.Fatalf("move %+v removes a replica that is not there", m)
				}
				delete(set, m.From)
			}
			if m.To != "" {
				if set[m.To] {
					t.Fatalf("move %+v adds a replica that is already there", m)
				}
				if set == nil {
					set = map[string]bool{}
					state[m.Partition] = set
				}
				set[m.To] = true
			}
			if len(set) == 0 {
				delete(state, m.Partition)
			}
		}
		if want := replicaSets(after); !setsEqual(state, want) {
			t.Fatalf("applying %+v to %v gives %v, want %v", moves, before, state, want)
		}
		if !slices.IsSortedFunc(moves, func(x, y partition.Move) int {
			return cmp.Or(cmp.Compare(x.Partition, y.Partition), cmp.Compare(x.To, y.To), cmp.Compare(x.From, y.From))
		}) {
			t.Fatalf("moves not sorted: %+v", moves)
		}
	})
}
