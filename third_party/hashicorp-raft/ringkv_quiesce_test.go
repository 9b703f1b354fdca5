package raft

// Tests of RingKV's quiescence of idle groups (quiesce.go, RINGKV.md).

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingTransport counts the AppendEntries a node sends, pipelined or not,
// and holds each quiet offer for quietHold first (RingKV's heartbeat
// channel lets quiet heartbeats linger for company). It also counts quiet
// offers sent to a target whose last AppendEntries failed.
type countingTransport struct {
	*InmemTransport
	appends            *atomic.Int64
	offersAfterFailure *atomic.Int64
	quietHold          time.Duration
	// holding: how many quiet offers are being held right now.
	holding *atomic.Int64

	mu     sync.Mutex
	failed map[ServerAddress]bool
}

func (c *countingTransport) AppendEntries(id ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse) error {
	c.appends.Add(1)
	c.mu.Lock()
	if args.Quiesce && c.failed[target] {
		c.offersAfterFailure.Add(1)
	}
	c.mu.Unlock()
	if args.Quiesce && c.quietHold > 0 {
		c.holding.Add(1)
		time.Sleep(c.quietHold) // the transport's linger, simulated
		c.holding.Add(-1)
	}
	err := c.InmemTransport.AppendEntries(id, target, args, resp)
	c.mu.Lock()
	if c.failed == nil {
		c.failed = map[ServerAddress]bool{}
	}
	c.failed[target] = err != nil
	c.mu.Unlock()
	return err
}

func (c *countingTransport) AppendEntriesPipeline(id ServerID, target ServerAddress) (AppendPipeline, error) {
	p, err := c.InmemTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &countingPipeline{AppendPipeline: p, appends: c.appends}, nil
}

type countingPipeline struct {
	AppendPipeline
	appends *atomic.Int64
}

func (c *countingPipeline) AppendEntries(args *AppendEntriesRequest, resp *AppendEntriesResponse) (AppendFuture, error) {
	c.appends.Add(1)
	return c.AppendPipeline.AppendEntries(args, resp)
}

type quietNode struct {
	raft    *Raft
	fsm     *MockFSM
	logs    *InmemStore
	stable  *InmemStore
	snaps   *InmemSnapshotStore
	trans   *InmemTransport
	appends atomic.Int64
	// offersAfterFailure counts quiet offers to a follower whose last
	// AppendEntries failed (see countingTransport).
	offersAfterFailure atomic.Int64
	// holding: quiet offers n's transport holds right now.
	holding   atomic.Int64
	conf      *Config
	quietHold time.Duration
}

// quietCluster starts three bootstrapped nodes with quiescence on.
func quietCluster(t *testing.T, quiesce time.Duration) []*quietNode {
	return quietClusterHolding(t, quiesce, 0)
}

// quietClusterHolding is quietCluster with transports that hold every
// quiet offer for hold.
func quietClusterHolding(t *testing.T, quiesce, hold time.Duration) []*quietNode {
	t.Helper()
	var (
		nodes  []*quietNode
		config Configuration
	)
	for i := range 3 {
		addr, tr := NewInmemTransport(ServerAddress(fmt.Sprintf("q%d", i)))
		config.Servers = append(config.Servers, Server{Suffrage: Voter, ID: ServerID(addr), Address: addr})
		nodes = append(nodes, &quietNode{trans: tr, logs: NewInmemStore(), snaps: NewInmemSnapshotStore()})
	}
	connectAll(nodes)
	for _, n := range nodes {
		n.stable = n.logs
		n.conf = inmemConfig(t)
		n.conf.LocalID = ServerID(n.trans.LocalAddr())
		n.conf.QuiesceTimeout = quiesce
		n.quietHold = hold
		if err := BootstrapCluster(n.conf, n.logs, n.stable, n.snaps, n.trans, config); err != nil {
			t.Fatal(err)
		}
		n.start(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.raft.Shutdown().Error()
		}
	})
	return nodes
}

func connectAll(nodes []*quietNode) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
}

// start runs (or runs again) n's Raft on its stores.
func (n *quietNode) start(t *testing.T) {
	t.Helper()
	n.fsm = &MockFSM{}
	r, err := NewRaft(n.conf, n.fsm, n.logs, n.stable, n.snaps,
		&countingTransport{InmemTransport: n.trans, appends: &n.appends, offersAfterFailure: &n.offersAfterFailure, quietHold: n.quietHold, holding: &n.holding})
	if err != nil {
		t.Fatal(err)
	}
	n.raft = r
}

func quietLeader(t *testing.T, nodes []*quietNode) (*quietNode, []*quietNode) {
	t.Helper()
	var leader *quietNode
	waitFor(t, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == Leader {
				leader = n
				return true
			}
		}
		return false
	})
	var followers []*quietNode
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	return leader, followers
}

func applied(n *quietNode) int {
	n.fsm.Lock()
	defer n.fsm.Unlock()
	return len(n.fsm.logs)
}

// An idle group goes quiet: both followers accept, the leader sends about
// one append per follower per QuiesceTimeout/4 to /2 instead of a heartbeat
// every HeartbeatTimeout/10 and a commit refresh every CommitTimeout, nobody
// stands for election, and a write afterwards commits and reaches every
// follower's state machine (they learn its commit index although they had
// stopped getting commit refreshes).
func TestRingKVQuietGroupStopsChattering(t *testing.T) {
	nodes := quietCluster(t, time.Second)
	leader, followers := quietLeader(t, nodes)
	for i := range 5 {
		if err := leader.raft.Apply(fmt.Appendf(nil, "w%d", i), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both followers quiet", func() bool {
		return followers[0].raft.Quiescent() && followers[1].raft.Quiescent()
	})
	term := leader.raft.CurrentTerm()

	// Quiet heartbeats: every 250-500 ms to each of 2 followers, about 4-8
	// in a second. Upstream's timers here (a heartbeat every 5-10 ms and a
	// commit refresh every 5-10 ms per follower) would send over 400.
	before := leader.appends.Load()
	time.Sleep(time.Second) // the window being measured, not a wait for a condition
	sent := leader.appends.Load() - before
	if sent > 60 {
		t.Fatalf("the quiet leader sent %d appends in 1 s; want about 4-8 (quiet heartbeats only)", sent)
	}
	if sent == 0 {
		t.Fatalf("the quiet leader sent nothing in 1 s; quiet heartbeats must go on (every QuiesceTimeout/4 to /2)")
	}
	for _, n := range nodes {
		if got := n.raft.CurrentTerm(); got != term {
			t.Fatalf("term moved from %d to %d while the group was quiet: someone stood for election", term, got)
		}
	}

	if err := leader.raft.Apply([]byte("after"), 5*time.Second).Error(); err != nil {
		t.Fatalf("write to a quiet group: %v", err)
	}
	want := applied(leader)
	waitFor(t, "every follower applies the write made after the quiet", func() bool {
		return applied(followers[0]) == want && applied(followers[1]) == want
	})
}

// A quiet follower waits QuiesceTimeout, not HeartbeatTimeout, for a
// silent leader; Wake (fast failover's hint that the leader's node is down)
// sends it back to HeartbeatTimeout, and the followers elect a new leader.
func TestRingKVQuietFollowerWaitsUntilWoken(t *testing.T) {
	nodes := quietCluster(t, time.Minute)
	leader, followers := quietLeader(t, nodes)
	if err := leader.raft.Apply([]byte("w"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both followers quiet", func() bool {
		return followers[0].raft.Quiescent() && followers[1].raft.Quiescent()
	})
	term := leader.raft.CurrentTerm()
	leader.trans.DisconnectAll()
	for _, f := range followers {
		f.trans.Disconnect(leader.trans.LocalAddr())
	}

	// Ten heartbeat timeouts of silence: a follower that is not quiet
	// stands for election after one or two.
	time.Sleep(10 * leader.conf.HeartbeatTimeout) // the silence being tested, not a wait for a condition
	for _, f := range followers {
		if f.raft.State() != Follower || f.raft.CurrentTerm() != term {
			t.Fatalf("a quiet follower stood for election after %v of silence (state %v, term %d, was %d); want it to wait QuiesceTimeout",
				10*leader.conf.HeartbeatTimeout, f.raft.State(), f.raft.CurrentTerm(), term)
		}
	}

	for _, f := range followers {
		f.raft.Wake()
		if f.raft.Quiescent() {
			t.Fatalf("Wake left the follower quiet")
		}
	}
	waitFor(t, "a new leader among the woken followers", func() bool {
		for _, f := range followers {
			if f.raft.State() == Leader && f.raft.CurrentTerm() > term {
				return true
			}
		}
		return false
	})
}

// waitWithin is waitFor with a shorter deadline, for what must happen well
// before a quiet heartbeat would make it happen anyway.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A follower that restarts in a quiet group has every entry but does not
// know they are committed, and the leader's commit refresh has stopped. It
// learns the commit index at once either way it gets in touch: by refusing
// a quiet offer (it waits long before an election, so the leader's next
// quiet heartbeat comes first), or by asking the leader for a vote (its
// election timeout is short; the leader's quiet heartbeats are 15-30 s apart
// here, so only the vote request can wake it in time).
func TestRingKVRestartedFollowerLearnsTheCommitIndex(t *testing.T) {
	for _, tt := range []struct {
		name             string
		quiesce          time.Duration
		followerTimeouts time.Duration // the restarted follower's heartbeat and election timeouts
	}{
		{"it refuses the quiet offer", time.Second, 5 * time.Second},
		{"it asks the leader for a vote", time.Minute, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nodes := quietCluster(t, tt.quiesce)
			leader, followers := quietLeader(t, nodes)
			for i := range 3 {
				if err := leader.raft.Apply(fmt.Appendf(nil, "w%d", i), 5*time.Second).Error(); err != nil {
					t.Fatal(err)
				}
			}
			f := followers[0]
			waitFor(t, "the follower quiet", func() bool { return f.raft.Quiescent() })
			want := applied(leader)

			if err := f.raft.Shutdown().Error(); err != nil {
				t.Fatal(err)
			}
			// The restarted follower's transport is a new one at the same address.
			_, f.trans = NewInmemTransport(f.trans.LocalAddr())
			connectAll(nodes)
			if tt.followerTimeouts > 0 {
				f.conf.HeartbeatTimeout, f.conf.ElectionTimeout = tt.followerTimeouts, tt.followerTimeouts
				f.conf.QuiesceTimeout = time.Minute
			}
			f.start(t)

			waitWithin(t, 2*time.Second, "the restarted follower applies every committed entry", func() bool {
				return applied(f) == want
			})
			waitFor(t, "the restarted follower quiet again", func() bool { return f.raft.Quiescent() })
			if leader.raft.State() != Leader {
				t.Fatalf("the leader lost its leadership over a follower's restart")
			}
		})
	}
}

// A transport may hold a quiet offer longer than the leader lease (the
// heartbeat channel lets quiet heartbeats linger), and nothing else goes to
// a calm follower meanwhile. The leader must not count that as lost
// contact: it would step down in every group going quiet. (Seen in
// RingKV's failover benchmark: leaders stepped down 1.5 s after writes
// stopped, "failed to contact quorum".)
func TestRingKVQuietOfferHeldLongerThanTheLease(t *testing.T) {
	nodes := quietClusterHolding(t, 2*time.Second, 200*time.Millisecond) // lease: 50 ms
	leader, followers := quietLeader(t, nodes)
	if err := leader.raft.Apply([]byte("w"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	term := leader.raft.CurrentTerm()
	// Up to 30 s, not waitFor's 10: with offers held 200 ms, settling can be
	// slow under make test's -race load (as for the cut-off test below).
	waitWithin(t, 30*time.Second, "both followers quiet", func() bool {
		return followers[0].raft.Quiescent() && followers[1].raft.Quiescent()
	})
	if leader.raft.State() != Leader || leader.raft.CurrentTerm() != term {
		t.Fatalf("the leader stepped down while its followers went quiet (state %v, term %d, was %d)",
			leader.raft.State(), leader.raft.CurrentTerm(), term)
	}
}

// A leader whose quiet group a write just woke, and which then loses both
// followers, steps down a lease or so later, not when the quiet lease it
// last scheduled its check for would have run out (QuiesceTimeout).
// (RingKV's TestQuorumLoss caught this: the survivor still led 9 s later.)
func TestRingKVWokenLeaderStepsDownWithoutQuorum(t *testing.T) {
	nodes := quietCluster(t, 20*time.Second)
	leader, followers := quietLeader(t, nodes)
	if err := leader.raft.Apply([]byte("w"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both followers quiet", func() bool {
		return followers[0].raft.Quiescent() && followers[1].raft.Quiescent()
	})
	// Four leases, during which a lease check finds both followers quiet
	// and schedules the next one a quiet lease (20 s) away.
	time.Sleep(4 * leader.conf.LeaderLeaseTimeout) // the state being set up, not a wait for a condition
	if err := leader.raft.Apply([]byte("wake"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	leader.trans.DisconnectAll()
	for _, f := range followers {
		f.trans.Disconnect(leader.trans.LocalAddr())
	}
	waitWithin(t, 3*time.Second, "the leader without its quorum steps down", func() bool {
		return leader.raft.State() != Leader
	})
}

// A leader whose quiet followers stop answering does not offer them quiet
// again until one answers, and steps down. An offer puts its follower on the
// quiet lease while it is on its way (held by the transport), so re-offering
// to a follower that is gone counted it as in contact whenever a lease check
// fell in that window, and the next check went a quiet lease away. (RingKV's
// TestBugLeaderlessWriteOutcomeUnknown caught this in CI: the survivor of two
// killed nodes kept leading a partition for 12.8 s.)
func TestRingKVCutOffLeaderStepsDownDespiteHeldOffers(t *testing.T) {
	nodes := quietClusterHolding(t, 2*time.Second, 200*time.Millisecond) // lease: 50 ms
	leader, followers := quietLeader(t, nodes)
	if err := leader.raft.Apply([]byte("w"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	// Held offers are silences of four heartbeat timeouts here, so under
	// load the group can churn a while before it settles quiet, and another
	// node may lead it then: wait for whichever leader's followers are both
	// quiet. (make test's -race run once saw leadership move 0.2 s after the
	// first election, and the old leader's "followers" never both went
	// quiet, one of them leading.)
	waitWithin(t, 30*time.Second, "a leader's followers both quiet", func() bool {
		for _, n := range nodes {
			if n.raft.State() == Leader {
				leader, followers = quietLeader(t, nodes)
				return followers[0].raft.Quiescent() && followers[1].raft.Quiescent()
			}
		}
		return false
	})
	leader.trans.DisconnectAll()
	for _, f := range followers {
		f.trans.Disconnect(leader.trans.LocalAddr())
	}
	waitWithin(t, 5*time.Second, "the cut-off leader steps down", func() bool {
		return leader.raft.State() != Leader
	})
	if n := leader.offersAfterFailure.Load(); n != 0 {
		t.Fatalf("the leader offered quiet %d times to followers whose last heartbeat had failed", n)
	}
}

// A leader whose followers die while its first quiet offers to them are on
// their way steps down a lease or so later. While an offer is held, the
// follower is on the quiet lease, so a lease check then schedules the next
// one a quiet lease away; the failed offer must bring it back, as a failed
// heartbeat to a quiet follower does. (RingKV's TestQuorumLoss caught this
// in CI: both followers were killed as the groups went quiet, and the
// survivor still led a partition 9.6 s later.)
func TestRingKVLeaderStepsDownWhenItsHeldOffersFail(t *testing.T) {
	nodes := quietClusterHolding(t, 20*time.Second, 200*time.Millisecond) // lease: 50 ms
	leader, followers := quietLeader(t, nodes)
	if err := leader.raft.Apply([]byte("w"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	// Both followers are offered quiet for the first time: cut them off
	// while the offers are held, after a lease check saw them offering.
	waitFor(t, "quiet offers to both followers held", func() bool { return leader.holding.Load() == 2 })
	time.Sleep(2 * leader.conf.LeaderLeaseTimeout) // the state being set up (a lease check during the hold), not a wait for a condition
	leader.trans.DisconnectAll()
	for _, f := range followers {
		f.trans.Disconnect(leader.trans.LocalAddr())
	}
	waitWithin(t, 3*time.Second, "the leader whose offers failed steps down", func() bool {
		return leader.raft.State() != Leader
	})
}
