package partition_test

import (
	"math"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/ringkv/ringkv/partition"
)

// movementBound is how far the moved count may stray from its mean. Under HRW
// each partition independently moves one replica with probability q = r/(n+1),
// so the count is Binomial(P, q). Six standard deviations (plus a little slack
// for small P) keeps the check meaningful yet never flaky.
func movementBound(p, n, r int) (mean, slack float64) {
	q := float64(r) / float64(n+1)
	mean = float64(p) * q
	return mean, 6*math.Sqrt(float64(p)*q*(1-q)) + 2
}

var movementCases = []struct {
	name    string
	p, n, r int
}{
	{name: "P=1024 n=3 r=3", p: 1024, n: 3, r: 3},
	{name: "P=1024 n=4 r=3", p: 1024, n: 4, r: 3},
	{name: "P=1024 n=5 r=3", p: 1024, n: 5, r: 3},
	{name: "P=1024 n=10 r=3", p: 1024, n: 10, r: 3},
	{name: "P=1024 n=20 r=5", p: 1024, n: 20, r: 5},
	{name: "P=1024 n=1 r=1", p: 1024, n: 1, r: 1},
	{name: "P=64 n=5 r=3", p: 64, n: 5, r: 3},
}

// TestAddNodeMovesOnlyOntoNewNode grows n members (n >= r) by one node and
// checks every move lands on the new node and about r*P/(n+1) replicas move.
func TestAddNodeMovesOnlyOntoNewNode(t *testing.T) {
	for _, tt := range movementCases {
		t.Run(tt.name, func(t *testing.T) {
			ring := mustRing(t, tt.p)
			members := nodes(tt.n)
			newNode := "joiner"
			before := partition.PlaceAll(ring, members, tt.r)
			after := partition.PlaceAll(ring, append(slices.Clone(members), newNode), tt.r)

			moves := partition.Diff(before, after)
			for _, m := range moves {
				// n >= r: every partition is full before, so each arrival evicts one.
				if m.To != newNode || m.From == "" {
					t.Fatalf("move %+v: want only swaps onto %q", m, newNode)
				}
			}
			if got := after.Count()[newNode]; got != len(moves) {
				t.Errorf("new node holds %d replicas but %d moved", got, len(moves))
			}
			mean, slack := movementBound(tt.p, tt.n, tt.r)
			t.Logf("moved %d replicas, expected r*P/(n+1) = %.1f (±%.1f)", len(moves), mean, slack)
			if math.Abs(float64(len(moves))-mean) > slack {
				t.Errorf("moved %d replicas, want %.1f ± %.1f", len(moves), mean, slack)
			}
		})
	}
}

// TestRemoveNodeMovesOnlyItsReplicas shrinks n+1 members by one and checks
// that only the leaver's replicas move, each to a surviving node.
func TestRemoveNodeMovesOnlyItsReplicas(t *testing.T) {
	for _, tt := range movementCases {
		t.Run(tt.name, func(t *testing.T) {
			ring := mustRing(t, tt.p)
			members := nodes(tt.n + 1)
			leaver := members[tt.n/2]
			before := partition.PlaceAll(ring, members, tt.r)
			remaining := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == leaver })
			after := partition.PlaceAll(ring, remaining, tt.r)

			moves := partition.Diff(before, after)
			for _, m := range moves {
				// n survivors >= r: each lost replica is re-created elsewhere.
				if m.From != leaver || m.To == "" || m.To == leaver {
					t.Fatalf("move %+v: want only moves off %q onto a survivor", m, leaver)
				}
			}
			if held := before.Count()[leaver]; held != len(moves) {
				t.Errorf("leaver held %d replicas but %d moved", held, len(moves))
			}
			mean, slack := movementBound(tt.p, tt.n, tt.r)
			t.Logf("moved %d replicas, expected r*P/(n+1) = %.1f (±%.1f)", len(moves), mean, slack)
			if math.Abs(float64(len(moves))-mean) > slack {
				t.Errorf("moved %d replicas, want %.1f ± %.1f", len(moves), mean, slack)
			}
		})
	}
}

// TestMembershipChangeProperties checks the exact movement guarantees for
// arbitrary names, counts and partition counts, including n < r.
func TestMembershipChangeProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := rapid.SampledFrom([]int{1, 3, 16, 64}).Draw(t, "p")
		r := rapid.IntRange(1, 5).Draw(t, "r")
		members := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z][a-z0-9.:-]{0,10}`), 1, 12,
			func(s string) string { return s }).Draw(t, "members")
		ring := mustRing(t, p)
		joiner := members[0]
		others := members[1:]

		small := partition.PlaceAll(ring, others, r)
		big := partition.PlaceAll(ring, members, r)

		for _, m := range partition.Diff(small, big) {
			if m.To != joiner {
				t.Fatalf("join of %q: move %+v puts a replica elsewhere", joiner, m)
			}
			if full := len(others) >= r; full != (m.From != "") {
				t.Fatalf("join of %q with %d others, r=%d: move %+v", joiner, len(others), r, m)
			}
		}
		for _, m := range partition.Diff(big, small) {
			if m.From != joiner {
				t.Fatalf("leave of %q: move %+v takes a replica from elsewhere", joiner, m)
			}
		}
	})
}

// TestBalance checks each node holds close to its fair share r*P/n.
func TestBalance(t *testing.T) {
	tests := []struct {
		name    string
		members []string
	}{
		{name: "sequential names", members: nodes(5)},
		{name: "addresses", members: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000", "10.0.0.4:7000", "10.0.0.5:7000"}},
		{name: "single letters", members: []string{"a", "b", "c", "d", "e"}},
		{name: "uuids", members: []string{
			"0b6a4a3e-6f1d-4c2e-9a57-1f0e2d3c4b5a", "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
			"9f8e7d6c-5b4a-4321-8fed-cba987654321", "c0ffee00-1234-4abc-9def-000000000001",
			"deadbeef-0000-4000-8000-00000000beef",
		}},
	}
	const p, r, tolerance = 256, 3, 0.35
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counts := partition.PlaceAll(mustRing(t, p), tt.members, r).Count()
			fair := float64(r*p) / float64(len(tt.members))
			total := 0
			for _, m := range tt.members {
				c := counts[m]
				total += c
				if math.Abs(float64(c)-fair) > tolerance*fair {
					t.Errorf("%s holds %d replicas, want %.1f ± %.0f%%", m, c, fair, tolerance*100)
				}
			}
			if total != r*p {
				t.Errorf("placement holds %d replicas, want r*P = %d", total, r*p)
			}
			t.Logf("counts %v, fair share %.1f", counts, fair)
		})
	}
}
