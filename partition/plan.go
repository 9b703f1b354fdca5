package partition

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// NodeState is what the planner knows of one node. Liveness comes from gossip
// and is only a hint: the planner never removes a voter unless a majority of
// the remaining voters is alive, and a node must be dead for DeadTimeout
// before its replicas are replaced.
type NodeState struct {
	Name     string
	Alive    bool          // alive or suspect
	DeadFor  time.Duration // how long it has been continuously dead (when !Alive)
	Draining bool          // operator asked to move everything off it
	Removed  bool          // operator declared it gone for good
}

// Replicas is a partition's actual Raft configuration as its leader sees it.
type Replicas struct {
	Voters    []string
	Nonvoters []string
	Leader    string   // "" when the partition has no leader
	CaughtUp  []string // nonvoters whose state machine has caught up with the leader
}

// ActionKind is one kind of configuration step.
type ActionKind int

// The steps of a move, in the order a move uses them.
const (
	ActAddNonvoter ActionKind = iota + 1
	ActPromote
	ActTransferLeader
	ActRemove
)

func (k ActionKind) String() string {
	switch k {
	case ActAddNonvoter:
		return "add-nonvoter"
	case ActPromote:
		return "promote"
	case ActTransferLeader:
		return "transfer-leader"
	case ActRemove:
		return "remove"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is one configuration step for one partition, run by its leader.
type Action struct {
	Partition ID
	Kind      ActionKind
	Node      string // the replica added, promoted, removed, or the new leader
}

func (a Action) String() string { return fmt.Sprintf("p%d %s %s", a.Partition, a.Kind, a.Node) }

// PlanInput is everything the planner looks at.
type PlanInput struct {
	Ring        Ring
	Replicas    int // R
	Nodes       []NodeState
	DeadTimeout time.Duration
	Actual      map[ID]Replicas
	// MaxMovesPerNode bounds the partitions led by one node that may have a
	// move in flight (a nonvoter being added) at once, so rebalancing does not
	// starve client traffic. 0 means 1.
	MaxMovesPerNode int
}

// PartitionPlan is the planner's verdict on one partition.
type PartitionPlan struct {
	Partition       ID
	Desired         []string
	Actual          Replicas
	Next            *Action // the single next step, nil when none is due or it is blocked
	Moving          bool    // the configuration differs from the desired one
	UnderReplicated bool    // fewer than R voters are alive
	Blocked         string  // why nothing can happen now, if something should
}

// Plan computes, for every partition, the desired placement (HRW over
// eligible nodes) and the next safe configuration step toward it: add the
// missing replica as a nonvoter, promote it once it has caught up, move
// leadership off a replica that must go, and only then remove the surplus
// replica. One step per partition at a time; every step keeps a majority of
// the voters alive.
func Plan(in PlanInput) []PartitionPlan {
	nodes := map[string]NodeState{}
	var eligible []string
	for _, n := range in.Nodes {
		nodes[n.Name] = n
		if in.Eligible(n) {
			eligible = append(eligible, n.Name)
		}
	}
	limit := max(in.MaxMovesPerNode, 1)
	inflight := map[string]int{}
	for _, a := range in.Actual {
		// A move is in flight from the nonvoter's addition until the surplus
		// voter is removed.
		if a.Leader != "" && (len(a.Nonvoters) > 0 || len(a.Voters) > in.Replicas) {
			inflight[a.Leader]++
		}
	}
	out := make([]PartitionPlan, 0, in.Ring.Partitions())
	for i := range in.Ring.Partitions() {
		id := ID(i)
		act := in.Actual[id]
		p := PartitionPlan{Partition: id, Desired: Place(id, eligible, in.Replicas), Actual: act}
		p.UnderReplicated = countAlive(nodes, act.Voters) < in.Replicas
		p.Moving = !sameSet(act.Voters, p.Desired) || len(act.Nonvoters) > 0
		if p.Moving {
			p.Next, p.Blocked = next(id, act, p.Desired, nodes, in.Replicas)
		}
		if p.Next != nil && p.Next.Kind == ActAddNonvoter {
			if inflight[act.Leader] >= limit {
				p.Blocked = fmt.Sprintf("move limit reached on %s (%d in flight)", act.Leader, inflight[act.Leader])
				p.Next = nil
			} else {
				inflight[act.Leader]++
			}
		}
		out = append(out, p)
	}
	return out
}

// Eligible reports whether n may hold replicas: not drained or removed, and
// alive or dead for less than DeadTimeout (flap damping).
func (in PlanInput) Eligible(n NodeState) bool {
	if n.Removed || n.Draining {
		return false
	}
	// A node dead for less than DeadTimeout keeps its place (flap damping).
	return n.Alive || n.DeadFor < in.DeadTimeout
}

// next picks the one step a partition's leader should take now.
func next(id ID, act Replicas, desired []string, nodes map[string]NodeState, r int) (*Action, string) {
	if act.Leader == "" {
		return nil, "no leader (quorum lost or election in progress)"
	}
	if countAlive(nodes, act.Voters) < len(act.Voters)/2+1 {
		return nil, "leader cannot count on a quorum of alive voters"
	}
	step := func(k ActionKind, node string) (*Action, string) {
		return &Action{Partition: id, Kind: k, Node: node}, ""
	}
	// 1. A nonvoter that is no longer wanted: cancel its move.
	for _, nv := range sorted(act.Nonvoters) {
		if !slices.Contains(desired, nv) {
			return step(ActRemove, nv)
		}
	}
	// 2. A wanted nonvoter (every one left is wanted): promote it once it
	// has caught up.
	if len(act.Nonvoters) > 0 {
		nv := sorted(act.Nonvoters)[0]
		if !slices.Contains(act.CaughtUp, nv) {
			return nil, fmt.Sprintf("waiting for %s to catch up", nv)
		}
		if !nodes[nv].Alive {
			return nil, fmt.Sprintf("nonvoter %s is not alive", nv)
		}
		return step(ActPromote, nv)
	}
	// 3. A surplus voter, once its replacement votes: move leadership off it
	// first, then remove it, if a majority of the rest stays alive.
	if len(act.Voters) > r {
		for _, v := range removalOrder(act.Voters, desired, nodes) {
			rest := without(act.Voters, v)
			if countAlive(nodes, rest) < len(rest)/2+1 {
				continue
			}
			if v == act.Leader {
				for _, d := range desired {
					if slices.Contains(act.Voters, d) && nodes[d].Alive {
						return step(ActTransferLeader, d)
					}
				}
				return nil, fmt.Sprintf("no alive desired voter to take leadership from %s", v)
			}
			return step(ActRemove, v)
		}
		return nil, "removing any surplus voter would leave less than a majority alive"
	}
	// 4. A desired replica that is missing: add it as a nonvoter.
	for _, d := range desired {
		if slices.Contains(act.Voters, d) {
			continue
		}
		if !nodes[d].Alive {
			return nil, fmt.Sprintf("target %s is not alive", d)
		}
		return step(ActAddNonvoter, d)
	}
	// 5. Voters that are not desired but no replacement exists yet (fewer
	// eligible nodes than R): keep them rather than shrink the group.
	if len(desired) < r {
		return nil, fmt.Sprintf("only %d eligible nodes for %d replicas", len(desired), r)
	}
	return nil, ""
}

// removalOrder lists the voters that are not desired, the dead ones first.
func removalOrder(voters, desired []string, nodes map[string]NodeState) []string {
	var out []string
	for _, v := range sorted(voters) {
		if !slices.Contains(desired, v) {
			out = append(out, v)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return !nodes[out[i]].Alive && nodes[out[j]].Alive })
	return out
}

func countAlive(nodes map[string]NodeState, names []string) int {
	c := 0
	for _, n := range names {
		if nodes[n].Alive {
			c++
		}
	}
	return c
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func without(s []string, x string) []string {
	out := make([]string, 0, len(s))
	for _, y := range s {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
