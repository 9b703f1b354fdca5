package node

import (
	"testing"
	"time"

	"github.com/ringkv/ringkv/partition"
)

// A restarted node whose gossip has not yet heard of a voter (here n1) must
// not replace it: without addUnknownMembers the planner sees n1 nowhere and
// moves its replicas at once (the move a restarted node made in one run of
// the integration test TestElasticDeadBriefly, undone 23 s later). Unknown
// past --dead-timeout, or removed by an operator, it is replaced as a dead
// node would be.
func TestUnknownVoterKeepsItsPlaceUntilTheDeadTimeout(t *testing.T) {
	ring, err := partition.NewRing(16)
	if err != nil {
		t.Fatal(err)
	}
	const deadTimeout = 20 * time.Second
	actual := map[partition.ID]partition.Replicas{}
	var configs [][]string
	for id, voters := range partition.PlaceAll(ring, []string{"n1", "n2", "n3", "n4"}, 3) {
		leader := voters[0]
		if leader == "n1" {
			leader = voters[1]
		}
		actual[partition.ID(id)] = partition.Replicas{Voters: voters, Leader: leader}
		configs = append(configs, voters)
	}
	// n2's gossip knows itself, n3 and n4; not n1.
	gossip := []partition.NodeState{{Name: "n2", Alive: true}, {Name: "n3", Alive: true}, {Name: "n4", Alive: true}}
	plan := func(states []partition.NodeState) (adds int) {
		for _, p := range partition.Plan(partition.PlanInput{Ring: ring, Replicas: 3, Nodes: states,
			DeadTimeout: deadTimeout, Actual: actual, MaxMovesPerNode: 16}) {
			if p.Next != nil && p.Next.Kind == partition.ActAddNonvoter {
				adds++
			}
		}
		return adds
	}
	clone := func() []partition.NodeState { return append([]partition.NodeState(nil), gossip...) }

	if adds := plan(clone()); adds == 0 {
		t.Fatal("with n1 simply missing the planner moves nothing: this test no longer shows what it guards against")
	}
	if adds := plan(addUnknownMembers(clone(), configs, "n2", nil, 2*time.Second)); adds != 0 {
		t.Fatalf("n1 unknown for 2 s: %d replicas added elsewhere, want none within --dead-timeout %v", adds, deadTimeout)
	}
	if adds := plan(addUnknownMembers(clone(), configs, "n2", nil, deadTimeout+time.Second)); adds == 0 {
		t.Fatal("n1 unknown for longer than --dead-timeout: nothing replaces it")
	}
	if adds := plan(addUnknownMembers(clone(), configs, "n2", []string{"n1"}, time.Second)); adds == 0 {
		t.Fatal("n1 removed by an operator: nothing replaces it")
	}

	states := addUnknownMembers(clone(), configs, "n2", nil, time.Second)
	if len(states) != 4 || states[3].Name != "n1" || states[3].Alive || states[3].DeadFor != time.Second {
		t.Fatalf("states = %+v, want the three known plus n1, dead for 1s, once", states)
	}
}
