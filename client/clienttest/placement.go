package clienttest

import (
	"slices"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/partition"
)

// MoveBytes is what the fake counts as sent by Raft (Status.raft_bytes_sent
// of the partition's leader) each time Step adds a replica: the snapshot
// that a real leader would send to the new nonvoter.
const MoveBytes = 1 << 20

// SetReplicationFactor sets R and puts every partition at its desired
// placement (HRW over the eligible nodes, as partition.Place ranks them),
// led by the first desired node.
func (c *Cluster) SetReplicationFactor(r int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replicas = r
	for _, p := range c.planLocked(false) {
		c.voters[p.Partition] = slices.Clone(p.Desired)
		c.nonvoters[p.Partition] = nil
		c.leaders[p.Partition] = -1
		if len(p.Desired) > 0 {
			c.leaders[p.Partition] = c.nodeIndex(p.Desired[0])
		}
	}
}

// SetReplicas sets the configuration of partition id: its voters and
// nonvoters (node names). Its leader is left as it is.
func (c *Cluster) SetReplicas(id partition.ID, voters, nonvoters []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.voters[id] = slices.Clone(voters)
	c.nonvoters[id] = slices.Clone(nonvoters)
}

// Replicas returns the voters and nonvoters of partition id.
func (c *Cluster) Replicas(id partition.ID) (voters, nonvoters []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.voters[id]), slices.Clone(c.nonvoters[id])
}

// SetDraining sets or clears the draining flag of node i, as Drain does.
func (c *Cluster) SetDraining(i int, draining bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[i].Draining = draining
}

// Draining reports whether node i is marked draining.
func (c *Cluster) Draining(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].GetDraining()
}

// Removed reports whether node i was declared removed.
func (c *Cluster) Removed(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].GetRemoved()
}

// Step applies, to every partition, the next configuration step the planner
// names (add a nonvoter, promote it, move leadership, remove a replica), as
// if every nonvoter had caught up at once, and returns how many steps it
// took: 0 when every partition has settled or is blocked.
func (c *Cluster) Step() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	steps := 0
	for _, p := range c.planLocked(true) {
		a := p.Next
		if a == nil {
			continue
		}
		steps++
		id := a.Partition
		switch a.Kind {
		case partition.ActAddNonvoter:
			c.nonvoters[id] = append(c.nonvoters[id], a.Node)
			c.sent[c.leaders[id]] += MoveBytes
		case partition.ActPromote:
			c.nonvoters[id] = without(c.nonvoters[id], a.Node)
			c.voters[id] = append(c.voters[id], a.Node)
		case partition.ActTransferLeader:
			c.leaders[id] = c.nodeIndex(a.Node)
		case partition.ActRemove:
			c.voters[id] = without(c.voters[id], a.Node)
			c.nonvoters[id] = without(c.nonvoters[id], a.Node)
		}
	}
	return steps
}

// planLocked runs the real planner over the model. caughtUp counts every
// nonvoter as caught up; the real nodes cannot tell from the Plan call, so
// the Plan answer leaves it false.
func (c *Cluster) planLocked(caughtUp bool) []partition.PartitionPlan {
	in := partition.PlanInput{
		Ring:            c.Ring,
		Replicas:        c.replicas,
		Actual:          make(map[partition.ID]partition.Replicas, len(c.voters)),
		MaxMovesPerNode: len(c.voters), // the fake has no move limit
	}
	for _, m := range c.members {
		in.Nodes = append(in.Nodes, partition.NodeState{
			Name: m.GetName(), Alive: m.GetStatus() == "alive" || m.GetStatus() == "suspect",
			Draining: m.GetDraining(), Removed: m.GetRemoved(),
		})
	}
	for id := range c.voters {
		r := partition.Replicas{Voters: c.voters[id], Nonvoters: c.nonvoters[id]}
		if l := c.leaders[id]; l >= 0 {
			r.Leader = c.Nodes[l].Name
		}
		if caughtUp {
			r.CaughtUp = c.nonvoters[id]
		}
		in.Actual[partitionID(id)] = r
	}
	return partition.Plan(in)
}

// planResponse is the answer to Plan.
func (c *Cluster) planResponse() *ringkvv1.PlanResponse {
	out := &ringkvv1.PlanResponse{}
	for _, p := range c.planLocked(false) {
		pp := &ringkvv1.PartitionPlan{
			Id: uint32(p.Partition), Desired: p.Desired, Voters: slices.Clone(p.Actual.Voters),
			Nonvoters: slices.Clone(p.Actual.Nonvoters), Leader: p.Actual.Leader, Blocked: p.Blocked,
			Moving: p.Moving, UnderReplicated: p.UnderReplicated,
		}
		if p.Next != nil {
			pp.Next = p.Next.Kind.String() + " " + p.Next.Node
			out.MovesPlanned++
		}
		if p.Moving {
			out.Moving++
		}
		if p.UnderReplicated {
			out.UnderReplicated++
		}
		out.Partitions = append(out.Partitions, pp)
	}
	return out
}

// nodeIndex returns the index of the node named name, or -1.
func (c *Cluster) nodeIndex(name string) int {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

func hosts(voters, nonvoters []string, name string) bool {
	return slices.Contains(voters, name) || slices.Contains(nonvoters, name)
}

func without(s []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(y string) bool { return y == x })
}
