package clienttest

import (
	"slices"
	"testing"

	"github.com/ringkv/ringkv/partition"
)

// settle steps the fake until nothing moves and returns the step rounds.
func settle(t *testing.T, c *Cluster) int {
	t.Helper()
	for round := range 20 {
		if c.Step() == 0 {
			return round
		}
	}
	t.Fatal("the fake did not settle within 20 rounds")
	return 0
}

func TestStepConverges(t *testing.T) {
	tests := []struct {
		name    string
		nodes   int
		drain   []int
		dead    []int // marked dead and removed
		undrain bool  // undrain again after settling
	}{
		{"drain one of four", 4, []int{1}, nil, false},
		{"drain two of five", 5, []int{0, 4}, nil, false},
		{"remove a dead node", 4, nil, []int{2}, false},
		{"drain then undrain", 4, []int{3}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const p, r = 16, 3
			c := NewCluster(t, tc.nodes, p)
			c.SetReplicationFactor(r)
			before := make(map[partition.ID][]string)
			for id := range partition.ID(p) {
				before[id], _ = c.Replicas(id)
			}
			gone := map[string]bool{}
			c.mu.Lock()
			for _, i := range tc.drain {
				c.members[i].Draining = true
				gone[c.Nodes[i].Name] = true
			}
			for _, i := range tc.dead {
				c.members[i].Status, c.members[i].Removed = "dead", true
				gone[c.Nodes[i].Name] = true
			}
			c.mu.Unlock()
			settle(t, c)

			moved := 0
			for id := range partition.ID(p) {
				voters, nonvoters := c.Replicas(id)
				if len(voters) != r || len(nonvoters) != 0 {
					t.Fatalf("partition %d: voters %v nonvoters %v; want %d voters", id, voters, nonvoters, r)
				}
				for _, v := range voters {
					if gone[v] {
						t.Fatalf("partition %d still on %s: %v", id, v, voters)
					}
				}
				c.mu.Lock()
				leader := c.Nodes[c.leaders[id]].Name
				c.mu.Unlock()
				if !slices.Contains(voters, leader) {
					t.Fatalf("partition %d led by %s, not a voter of %v", id, leader, voters)
				}
				for _, v := range before[id] {
					if gone[v] {
						moved++
					}
				}
			}
			c.mu.Lock()
			var sent uint64
			for _, s := range c.sent {
				sent += s
			}
			plan := c.planResponse()
			c.mu.Unlock()
			if sent != uint64(moved)*MoveBytes {
				t.Fatalf("%d bytes sent; want %d for %d moved replicas", sent, uint64(moved)*MoveBytes, moved)
			}
			if plan.GetMoving() != 0 || plan.GetMovesPlanned() != 0 || plan.GetUnderReplicated() != 0 {
				t.Fatalf("plan after settling: %v", plan)
			}
			if tc.undrain {
				c.mu.Lock()
				for _, i := range tc.drain {
					c.members[i].Draining = false
				}
				c.mu.Unlock()
				settle(t, c)
				for id := range partition.ID(p) {
					if voters, _ := c.Replicas(id); !sameSet(voters, before[id]) {
						t.Fatalf("partition %d after undrain: %v, want its placement before the drain %v", id, voters, before[id])
					}
				}
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
