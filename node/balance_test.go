package node

import (
	"fmt"
	"reflect"
	"testing"
)

// choices returns n partitions led by self, each with the same voters. The
// planner never looks at the replica, so it is nil.
func choices(n int, voters ...string) []leaderChoice {
	out := make([]leaderChoice, n)
	for i := range out {
		for _, v := range voters {
			out[i].voters = append(out[i].voters, voterAddr{v, v + ":7200"})
		}
	}
	return out
}

// moved summarizes moves as "i->node", i being the move's position in leading.
func moved(leading []leaderChoice, moves []leaderMove) []string {
	var out []string
	for _, m := range moves {
		i := -1
		for j := range leading {
			if &leading[j] == m.from {
				i = j
			}
		}
		if m.to.addr != m.to.id+":7200" {
			panic(fmt.Sprintf("move %d to %s carries address %q", i, m.to.id, m.to.addr))
		}
		out = append(out, fmt.Sprintf("%d->%s", i, m.to.id))
	}
	return out
}

func TestPlanLeaderMoves(t *testing.T) {
	cases := []struct {
		name    string
		counts  map[string]int
		limit   int
		leading []leaderChoice
		max     int
		want    []string
	}{
		{
			// After a cold start the bootstrapping node led 35 of 64: one
			// pass now hands away up to max, to whoever leads the fewest.
			name:    "cold start sheds up to max, fewest first",
			counts:  map[string]int{"a": 35, "b": 15, "c": 14},
			limit:   22,
			leading: choices(35, "b", "c"),
			max:     8,
			want:    []string{"0->c", "1->b", "2->c", "3->b", "4->c", "5->b", "6->c", "7->b"},
		},
		{
			name:    "stops at the limit",
			counts:  map[string]int{"a": 24, "b": 21, "c": 19},
			limit:   22,
			leading: choices(24, "b", "c"),
			max:     8,
			want:    []string{"0->c", "1->c"},
		},
		{
			name:    "never pushes a taker past the limit",
			counts:  map[string]int{"a": 30, "b": 22, "c": 20},
			limit:   22,
			leading: choices(30, "b", "c"),
			max:     8,
			want:    []string{"0->c", "1->c"},
		},
		{
			name:   "skips partitions whose voters are all full or gone",
			counts: map[string]int{"a": 24, "b": 22, "c": 20},
			limit:  22,
			leading: append(append(choices(1, "b"), choices(1)...),
				leaderChoice{voters: []voterAddr{{"b", "b:7200"}, {"c", "c:7200"}}}),
			max:  8,
			want: []string{"2->c"},
		},
		{
			name:    "at or under the limit: nothing",
			counts:  map[string]int{"a": 22, "b": 21, "c": 21},
			limit:   22,
			leading: choices(22, "b", "c"),
			max:     8,
			want:    nil,
		},
		{
			// A draining node (limit 0) hands everything away, to full
			// nodes too.
			name:    "draining sheds to anyone",
			counts:  map[string]int{"a": 3, "b": 30, "c": 31},
			limit:   0,
			leading: choices(3, "b", "c"),
			max:     8,
			want:    []string{"0->b", "1->b", "2->c"}, // ties go to the voter listed first
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fmt.Sprint(tc.counts)
			got := moved(tc.leading, planLeaderMoves("a", tc.counts, tc.limit, tc.leading, tc.max))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("moves %v, want %v", got, tc.want)
			}
			if after := fmt.Sprint(tc.counts); after != before {
				t.Fatalf("planLeaderMoves changed the caller's counts: %s -> %s", before, after)
			}
		})
	}
}
