package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/membership"
)

// fakeReplica is a local replica as collectRemoved sees it.
type fakeReplica struct {
	pid       uint32
	member    bool
	leader    string
	leading   bool
	silentFor time.Duration // since it last heard from a leader, as of each call
	quiet     bool
}

func (r fakeReplica) Partition() uint32                       { return r.pid }
func (r fakeReplica) Membership() (member, voter bool, n int) { return r.member, r.member, 3 }
func (r fakeReplica) LeaderID() string                        { return r.leader }
func (r fakeReplica) IsLeader() bool                          { return r.leading }
func (r fakeReplica) LastContact() time.Time                  { return time.Now().Add(-r.silentFor) }
func (r fakeReplica) Quiescent() bool                         { return r.quiet }

// fakePeer is another node: its gossip entry and its answer to a local-only
// Partitions call in each pass (1, 2, ...).
type fakePeer struct {
	name    string
	status  membership.Status
	leading []uint32                                      // its gossiped leadership bitmap
	report  func(pass int) ([]*ringkvv1.Partition, error) // nil: must not be asked
}

// reports answers with the same partitions in every pass.
func reports(parts ...*ringkvv1.Partition) func(int) ([]*ringkvv1.Partition, error) {
	return func(int) ([]*ringkvv1.Partition, error) { return parts, nil }
}

func unreachable(int) ([]*ringkvv1.Partition, error) {
	return nil, errors.New("connection refused")
}

// part is a node's report of partition 5.
func part(leader string, term, commit, last uint64, replicas ...string) *ringkvv1.Partition {
	return &ringkvv1.Partition{Id: 5, Leader: leader, Term: term, CommitIndex: commit, LastIndex: last, Replicas: replicas}
}

// collectPasses runs up to passes collectRemoved passes over r on node n3
// and returns the pass that deleted it (0: none) and who was asked in each.
func collectPasses(t *testing.T, r fakeReplica, peers []fakePeer, passes int) (deletedAt int, asked []string) {
	t.Helper()
	n := &Node{
		cfg:      Config{Name: "n3", HeartbeatTimeout: 300 * time.Millisecond, QuiesceTimeout: 3 * time.Second},
		log:      slog.New(slog.DiscardHandler),
		removals: map[uint32]removalSeen{},
	}
	byName := map[string]fakePeer{}
	var members []membership.Member
	for _, p := range peers {
		byName[p.name] = p
		members = append(members, membership.Member{
			Meta:   membership.Meta{Name: p.name, Leading: membership.LeadingBitmap(p.leading)},
			Status: p.status,
		})
	}
	for pass := 1; pass <= passes; pass++ {
		var who []string
		rp := newPeerReports("n3", members, func(_ context.Context, m membership.Member) ([]*ringkvv1.Partition, error) {
			who = append(who, m.Meta.Name)
			report := byName[m.Meta.Name].report
			if report == nil {
				t.Errorf("pass %d asked %s, which it must not ask", pass, m.Meta.Name)
				return nil, errors.New("must not be asked")
			}
			return report(pass)
		})
		why := n.removedReason(t.Context(), r, nil, rp)
		asked = append(asked, fmt.Sprintf("pass %d: %s", pass, strings.Join(who, ",")))
		if why != "" {
			return pass, asked
		}
	}
	return 0, asked
}

// TestCollectRemoved: which local replicas collectRemoved asks about, whom
// it asks, and the rule that deletes one: only a member that reports itself
// as the partition's leader counts, seen twice, the second time with a
// commit index past the first sighting's last index.
func TestCollectRemoved(t *testing.T) {
	// Silences are measured when collectRemoved looks, not from a clock
	// read when the cases were built, so a slow machine cannot age them.
	const silent = time.Minute // heard from no leader for a minute
	without := reports(part("n1", 4, 100, 100, "n1", "n2", "n4"))
	cases := []struct {
		name    string
		r       fakeReplica
		peers   []fakePeer
		deleted int    // pass that deletes the replica; 0: kept through 6
		asks    string // whom the first pass asks, if given
	}{{
		// The flake of integration/TestElasticRemovedWhileCutOff: removed
		// while stopped, it resumed as a candidate naming the leader that
		// removed it (hashicorp/raft's heartbeat fast path), and was never
		// asked about because it named a leader.
		name:    "member that names a leader it no longer hears from",
		r:       fakeReplica{pid: 5, member: true, leader: "n1", silentFor: silent},
		peers:   []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: without}},
		deleted: 2,
		asks:    "n1",
	}, {
		name:  "member following a leader it hears from is not asked about",
		r:     fakeReplica{pid: 5, member: true, leader: "n1", silentFor: 0},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}}},
	}, {
		// A quiet group's leader heartbeats every QuiesceTimeout/4 to /2:
		// silence past twice the heartbeat timeout is normal there.
		name:  "quiet follower between two quiet heartbeats is not asked about",
		r:     fakeReplica{pid: 5, member: true, leader: "n1", silentFor: 2 * time.Second, quiet: true},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}}},
	}, {
		name:    "quiet follower silent for twice the quiesce timeout is asked about",
		r:       fakeReplica{pid: 5, member: true, leader: "n1", silentFor: silent, quiet: true},
		peers:   []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: without}},
		deleted: 2,
		asks:    "n1",
	}, {
		name:    "not in its own configuration: the leader it follows answers",
		r:       fakeReplica{pid: 5, member: false, leader: "n1", silentFor: 0},
		peers:   []fakePeer{{name: "n1", status: membership.StatusAlive, report: without}},
		deleted: 2,
	}, {
		name: "no leader: the one gossip names answers",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{
			{name: "n2", status: membership.StatusAlive, report: unreachable},
			{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: without},
		},
		deleted: 2,
		asks:    "n1",
	}, {
		// This node's gossip view is as old as its replica's: it missed the
		// broadcasts of the new leader's bitmap while it was cut off.
		name: "no leader and gossip names none: every member is asked",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{
			{name: "n1", status: membership.StatusAlive, report: reports(part("n2", 4, 100, 100, "n1", "n2", "n4"))},
			{name: "n2", status: membership.StatusSuspect, report: reports(part("n2", 4, 100, 100, "n1", "n2", "n4"))},
		},
		deleted: 2,
		asks:    "n1,n2",
	}, {
		name: "the leader it names no longer leads: the one gossip names answers",
		r:    fakeReplica{pid: 5, member: true, leader: "n1", silentFor: silent},
		peers: []fakePeer{
			{name: "n1", status: membership.StatusAlive, report: reports(part("n4", 5, 100, 100, "n1", "n2", "n4"))},
			{name: "n4", status: membership.StatusAlive, leading: []uint32{5}, report: reports(part("n4", 5, 100, 100, "n1", "n2", "n4"))},
		},
		deleted: 2,
		asks:    "n1,n4",
	}, {
		name: "only a self-reported leader counts",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{
			{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: reports(part("n2", 4, 100, 100, "n1", "n2", "n4"))},
			{name: "n2", status: membership.StatusAlive, report: unreachable},
			{name: "n4", status: membership.StatusSuspect, report: reports(part("", 4, 100, 100, "n1", "n2", "n4"))},
		},
		asks: "n1,n2,n4",
	}, {
		name:  "dead members are not asked",
		r:     fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{{name: "n1", status: membership.StatusDead, leading: []uint32{5}}},
	}, {
		name: "not before the removal is committed",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: func(pass int) ([]*ringkvv1.Partition, error) {
			if pass < 4 {
				return []*ringkvv1.Partition{part("n1", 4, 99, 100, "n1", "n2", "n4")}, nil
			}
			return []*ringkvv1.Partition{part("n1", 4, 100, 101, "n1", "n2", "n4")}, nil
		}}},
		deleted: 4,
	}, {
		name: "a new leader or term starts the count again",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: func(pass int) ([]*ringkvv1.Partition, error) {
			return []*ringkvv1.Partition{part("n1", uint64(3+min(pass, 2)), 100, 100, "n1", "n2", "n4")}, nil
		}}},
		deleted: 3,
	}, {
		name: "a leader that lists it again resets the count",
		r:    fakeReplica{pid: 5, member: true, silentFor: silent},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive, leading: []uint32{5}, report: func(pass int) ([]*ringkvv1.Partition, error) {
			if pass == 2 {
				return []*ringkvv1.Partition{part("n1", 4, 100, 100, "n1", "n2", "n3")}, nil
			}
			return []*ringkvv1.Partition{part("n1", 4, 100, 100, "n1", "n2", "n4")}, nil
		}}},
		deleted: 4,
	}, {
		name:  "a leader is not asked about",
		r:     fakeReplica{pid: 5, member: true, leader: "n3", leading: true, silentFor: silent},
		peers: []fakePeer{{name: "n1", status: membership.StatusAlive}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, asked := collectPasses(t, tc.r, tc.peers, 6)
			if got != tc.deleted {
				t.Errorf("deleted in pass %d, want %d (0: kept); asked: %s", got, tc.deleted, strings.Join(asked, "; "))
			}
			if want := "pass 1: " + tc.asks; tc.asks != "" && asked[0] != want {
				t.Errorf("asked %q, want %q", asked[0], want)
			}
		})
	}
}

// TestCollectRemovedAsksEachPeerOncePerPass: however many replicas need a
// leader's word, one pass asks each other member at most once.
func TestCollectRemovedAsksEachPeerOncePerPass(t *testing.T) {
	n := &Node{
		cfg:      Config{Name: "n3", HeartbeatTimeout: 300 * time.Millisecond, QuiesceTimeout: 3 * time.Second},
		log:      slog.New(slog.DiscardHandler),
		removals: map[uint32]removalSeen{},
	}
	members := []membership.Member{
		{Meta: membership.Meta{Name: "n1"}, Status: membership.StatusAlive},
		{Meta: membership.Meta{Name: "n2"}, Status: membership.StatusSuspect},
		{Meta: membership.Meta{Name: "n4"}, Status: membership.StatusAlive},
	}
	asked := map[string]int{}
	rp := newPeerReports("n3", members, func(_ context.Context, m membership.Member) ([]*ringkvv1.Partition, error) {
		asked[m.Meta.Name]++
		if m.Meta.Name == "n2" {
			return nil, errors.New("timeout")
		}
		return nil, nil // leads nothing
	})
	const silent = time.Minute
	for pid := range uint32(16) {
		r := fakeReplica{pid: pid, member: true, leader: "n1", silentFor: silent}
		if why := n.removedReason(t.Context(), r, nil, rp); why != "" {
			t.Fatalf("partition %d deleted (%s) though no member reports itself as its leader", pid, why)
		}
	}
	for _, m := range members {
		if asked[m.Meta.Name] != 1 {
			t.Errorf("%s asked %d times in one pass over 16 replicas; want once (asked: %v)", m.Meta.Name, asked[m.Meta.Name], asked)
		}
	}
}
