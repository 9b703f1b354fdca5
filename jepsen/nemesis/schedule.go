package nemesis

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Kind names a fault.
type Kind string

// The faults.
const (
	// PartitionHalves cuts the cluster into two random halves.
	PartitionHalves Kind = "partition-halves"
	// IsolateNode cuts one random node off from all others.
	IsolateNode Kind = "isolate-node"
	// IsolateLeader cuts off the current leader of a chosen partition.
	IsolateLeader Kind = "isolate-leader"
	// MajoritiesRing arranges the nodes in a random ring in which every
	// node sees a majority but no two nodes see the same one (on three
	// nodes: one random link is cut).
	MajoritiesRing Kind = "majorities-ring"
	// Bridge splits the nodes into two sides that only one bridge node sees
	// both of.
	Bridge Kind = "bridge"
	// OneWay makes one node either deaf (it drops everything from the
	// others) or mute (the others drop everything from it).
	OneWay Kind = "one-way"
	// Lossy drops 30% of the packets on every link between nodes.
	Lossy Kind = "lossy"
	// KillOne, KillMinority and KillAll send SIGKILL and restart at heal.
	KillOne      Kind = "kill-one"
	KillMinority Kind = "kill-minority"
	KillAll      Kind = "kill-all"
	// PauseNode and PauseLeader freeze a random node, or a chosen
	// partition's leader, for longer than an election timeout.
	PauseNode   Kind = "pause-node"
	PauseLeader Kind = "pause-leader"
	// MemberAdd starts a spare node that joins the running cluster (--join,
	// no --bootstrap-expect); placement moves replicas onto it.
	MemberAdd Kind = "member-add"
	// MemberDrain drains a node (kvctl drain) and undrains it 15-30 s later,
	// while other faults run.
	MemberDrain Kind = "member-drain"
	// MemberRemove isolates a node, removes it (kvctl remove) through the
	// majority, waits until its replicas are replaced, heals, and then
	// checks that the node no longer serves reads of those partitions from
	// its old copies.
	MemberRemove Kind = "member-remove"
)

// MembershipKinds are the membership faults (the group "membership"). What
// they do depends on the cluster at the time (spares left, nodes eligible
// for replicas); see package jepsen's membership nemesis.
var MembershipKinds = []Kind{MemberAdd, MemberDrain, MemberRemove}

// IsMembership reports whether k is a membership fault.
func IsMembership(k Kind) bool { return k == MemberAdd || k == MemberDrain || k == MemberRemove }

// LossProbability is the drop probability of the Lossy fault.
const LossProbability = 0.3

// AllKinds lists every fault.
var AllKinds = []Kind{PartitionHalves, IsolateNode, IsolateLeader, MajoritiesRing, Bridge, OneWay, Lossy,
	KillOne, KillMinority, KillAll, PauseNode, PauseLeader, MemberAdd, MemberDrain, MemberRemove}

// Groups of kinds, for the command line.
var groups = map[string][]Kind{
	"all":        AllKinds,
	"partition":  {PartitionHalves, IsolateNode, IsolateLeader, MajoritiesRing, Bridge},
	"net":        {PartitionHalves, IsolateNode, IsolateLeader, MajoritiesRing, Bridge, OneWay, Lossy},
	"kill":       {KillOne, KillMinority, KillAll},
	"pause":      {PauseNode, PauseLeader},
	"leader":     {IsolateLeader, PauseLeader},
	"membership": MembershipKinds,
	"none":       {},
}

// ParseKinds parses a comma-separated list of kinds and group names (all,
// partition, net, kill, pause, leader, membership, none).
func ParseKinds(s string) ([]Kind, error) {
	var out []Kind
	seen := map[Kind]bool{}
	add := func(k Kind) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if g, ok := groups[f]; ok {
			for _, k := range g {
				add(k)
			}
			continue
		}
		k := Kind(f)
		known := false
		for _, a := range AllKinds {
			known = known || a == k
		}
		if !known {
			return nil, fmt.Errorf("nemesis: unknown fault %q; known: %s and the groups all, partition, net, kill, pause, leader, membership, none", f, joinKinds(AllKinds))
		}
		add(k)
	}
	return out, nil
}

func joinKinds(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// Timing shapes a schedule.
type Timing struct {
	// Warmup is the healthy time before the first fault; Cooldown the
	// healthy time kept at the end.
	Warmup, Cooldown time.Duration
	// A fault lasts between MinFault and MaxFault; the cluster is healthy
	// between MinGap and MaxGap before the next one.
	MinFault, MaxFault time.Duration
	MinGap, MaxGap     time.Duration
}

// DefaultTiming gives windows of 5 to 12 s separated by 3 to 6 s, longer than
// kvd's election timeout (1 s) and shorter than its dead timeout (60 s).
func DefaultTiming() Timing {
	return Timing{Warmup: 5 * time.Second, Cooldown: 3 * time.Second, MinFault: 5 * time.Second, MaxFault: 12 * time.Second,
		MinGap: 3 * time.Second, MaxGap: 6 * time.Second}
}

// Fault is one planned window.
type Fault struct {
	Kind Kind `json:"kind"`
	// At is the start, from the run's start; For is how long it lasts.
	At  time.Duration `json:"at"`
	For time.Duration `json:"for"`
	// Seed draws the fault's targets.
	Seed uint64 `json:"seed"`
	// Partition is the partition whose leader a leader fault targets.
	Partition int `json:"partition"`
}

func (f Fault) String() string {
	return fmt.Sprintf("%s at %.1fs for %.1fs", f.Kind, f.At.Seconds(), f.For.Seconds())
}

// Plan draws a schedule for a run of length total: faults cycle through
// kinds in a seeded order (every kind once before any repeats).
func Plan(seed uint64, kinds []Kind, total time.Duration, t Timing, partitions int) []Fault {
	if len(kinds) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65))
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	var out []Fault
	var order []Kind
	at := t.Warmup
	for {
		if len(order) == 0 {
			order = append([]Kind(nil), kinds...)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		d := between(t.MinFault, t.MaxFault)
		if at+d > total-t.Cooldown {
			d = total - t.Cooldown - at
			if d < t.MinFault {
				return out
			}
		}
		f := Fault{Kind: order[0], At: at, For: d, Seed: rng.Uint64()}
		if partitions > 0 {
			f.Partition = rng.IntN(partitions)
		}
		order = order[1:]
		out = append(out, f)
		at += d + between(t.MinGap, t.MaxGap)
	}
}
