package raft

// Tests of RingKV's patch (RINGKV.md): the leader hands new entries to its
// replicators before its own log write returns, and counts itself toward the
// commit only after it.

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gateStore blocks StoreLogs while armed, until released; fail makes the
// blocked call return an error instead.
type gateStore struct {
	LogStore
	mu      sync.Mutex
	armed   bool
	entered chan struct{} // closed when an armed StoreLogs blocks
	release chan error
}

func (g *gateStore) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.entered = make(chan struct{})
	g.release = make(chan error)
}

func (g *gateStore) StoreLogs(logs []*Log) error {
	g.mu.Lock()
	armed, entered, release := g.armed, g.entered, g.release
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(entered)
		if err := <-release; err != nil {
			return err
		}
	}
	return g.LogStore.StoreLogs(logs)
}

type gatedNode struct {
	raft  *Raft
	store *InmemStore
	gate  *gateStore
	fsm   *MockFSM
	trans Transport
}

// gatedCluster starts three bootstrapped nodes whose log stores are gates
// over InmemStores, each behind a LogCache (as RingKV runs them).
func gatedCluster(t *testing.T) []*gatedNode { return gatedClusterOf(t, 3, 0) }

// gatedClusterOf starts voters bootstrapped nodes and spare ones outside the
// configuration (they wait to be added).
func gatedClusterOf(t *testing.T, voters, spare int) []*gatedNode {
	t.Helper()
	return gatedClusterConf(t, voters, spare, nil)
}

// gatedClusterConf is gatedClusterOf with each node's config passed through
// tune (when not nil) before the node starts.
func gatedClusterConf(t *testing.T, voters, spare int, tune func(*Config)) []*gatedNode {
	t.Helper()
	return gatedClusterWith(t, voters, spare, tune, nil)
}

// gatedClusterWith is gatedClusterConf with each node's transport passed
// through wrap (when not nil) before its Raft starts on it.
func gatedClusterWith(t *testing.T, voters, spare int, tune func(*Config), wrap func(*InmemTransport) Transport) []*gatedNode {
	t.Helper()
	var (
		nodes  []*gatedNode
		trans  []*InmemTransport
		config Configuration
	)
	for i := range voters + spare {
		addr, tr := NewInmemTransport(ServerAddress(fmt.Sprintf("n%d", i)))
		trans = append(trans, tr)
		if i < voters {
			config.Servers = append(config.Servers, Server{Suffrage: Voter, ID: ServerID(addr), Address: addr})
		}
	}
	for _, a := range trans {
		for _, b := range trans {
			if a != b {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i, tr := range trans {
		store := NewInmemStore()
		gate := &gateStore{LogStore: store}
		logs, err := NewLogCache(64, gate)
		if err != nil {
			t.Fatal(err)
		}
		conf := inmemConfig(t)
		conf.LocalID = ServerID(tr.LocalAddr())
		if tune != nil {
			tune(conf)
		}
		snaps := NewInmemSnapshotStore()
		if i < voters {
			if err := BootstrapCluster(conf, logs, store, snaps, tr, config); err != nil {
				t.Fatal(err)
			}
		}
		var rt Transport = tr
		if wrap != nil {
			rt = wrap(tr)
		}
		fsm := &MockFSM{}
		r, err := NewRaft(conf, fsm, logs, store, snaps, rt)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &gatedNode{raft: r, store: store, gate: gate, fsm: fsm, trans: rt})
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.gate.mu.Lock()
			if n.gate.release != nil {
				select {
				case n.gate.release <- errors.New("test over"):
				default:
				}
			}
			n.gate.mu.Unlock()
			_ = n.raft.Shutdown().Error()
		}
	})
	return nodes
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func leaderOf(t *testing.T, nodes []*gatedNode) *gatedNode {
	t.Helper()
	var leader *gatedNode
	waitFor(t, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == Leader {
				leader = n
				return true
			}
		}
		return false
	})
	// The leader's first entry (its no-op) must be committed everywhere.
	if err := leader.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	return leader
}

// While the leader's own write is blocked, its followers already store the
// entry; the write is acknowledged only after the leader's returned.
func TestRingKVLeaderReplicatesDuringItsOwnWrite(t *testing.T) {
	nodes := gatedCluster(t)
	leader := leaderOf(t, nodes)
	want := leader.raft.LastIndex() + 1

	leader.gate.arm()
	f := leader.raft.Apply([]byte("x"), 10*time.Second)
	<-leader.gate.entered
	waitFor(t, "both followers to store the entry while the leader's write is blocked", func() bool {
		for _, n := range nodes {
			if n == leader {
				continue
			}
			if last, _ := n.store.LastIndex(); last < want {
				return false
			}
		}
		return true
	})
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		t.Fatalf("Apply answered (%v) before the leader's own write returned", err)
	case <-time.After(50 * time.Millisecond):
	}
	leader.gate.release <- nil
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Apply did not finish after the leader's write returned")
	}
	if f.Index() != want {
		t.Fatalf("entry at index %d, want %d", f.Index(), want)
	}
}

// If the leader's write fails after its followers may have the entry, the
// outcome is unknown: the future gets ErrLeadershipLost and the leader
// steps down and restores its last index.
func TestRingKVLeaderWriteFailureIsOutcomeUnknown(t *testing.T) {
	nodes := gatedCluster(t)
	leader := leaderOf(t, nodes)
	before := leader.raft.LastIndex()

	leader.gate.arm()
	f := leader.raft.Apply([]byte("x"), 10*time.Second)
	<-leader.gate.entered
	leader.gate.release <- errors.New("disk on fire")
	if err := f.Error(); !errors.Is(err, ErrLeadershipLost) {
		t.Fatalf("Apply after the leader's write failed: %v, want ErrLeadershipLost", err)
	}
	if s := leader.raft.State(); s == Leader {
		t.Fatalf("leader still leads after its log write failed")
	}
	// The entry is in the leader's cache no more: whatever the group does
	// next, the old leader's log (below its stored index) is what it stored.
	if last, _ := leader.store.LastIndex(); last != before {
		t.Fatalf("leader's stored last index %d, want %d", last, before)
	}
}

// A configuration entry keeps upstream's order: the leader stores it before
// its replicators see it. With the early dispatch a promoted server could
// acknowledge the entry before the leader counted it as a voter; that
// acknowledgement is dropped (updateLastAppended counts only servers with a
// vote), and with another voter down the promotion could not commit until
// some later write (seen in RingKV's integration tests).
func TestRingKVConfigurationEntriesKeepUpstreamOrder(t *testing.T) {
	nodes := gatedClusterOf(t, 3, 1)
	leader := leaderOf(t, nodes)
	spare := nodes[3]
	id, addr := ServerID(spare.raft.localAddr), spare.raft.localAddr
	if err := leader.raft.AddNonvoter(id, addr, 0, 5*time.Second).Error(); err != nil {
		t.Fatalf("AddNonvoter: %v", err)
	}
	waitFor(t, "the spare to catch up", func() bool {
		last, _ := spare.store.LastIndex()
		return last == leader.raft.LastIndex()
	})
	before := leader.raft.LastIndex()
	for _, n := range nodes[:3] {
		if n != leader {
			if err := n.raft.Shutdown().Error(); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	leader.gate.arm()
	f := leader.raft.AddVoter(id, addr, 0, 10*time.Second)
	<-leader.gate.entered
	// While the leader's write of the promotion is held, the spare must not
	// receive it (an early dispatch delivers it within milliseconds).
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if last, _ := spare.store.LastIndex(); last > before {
			t.Fatalf("the spare stored index %d, the promotion, before the leader's own write returned", last)
		}
	}
	leader.gate.release <- nil
	if err := f.Error(); err != nil {
		t.Fatalf("promotion with one of four voters down did not commit: %v", err)
	}
}

// An Apply still queued in Raft's apply channel when Raft shuts down is
// never dispatched; upstream's future then never answers (hashicorp/raft#498).
// With the third patch it answers ErrRaftShutdown as soon as Shutdown is
// called, even while the leader loop is stuck in a log write.
func TestRingKVQueuedApplyAnsweredAtShutdown(t *testing.T) {
	nodes := gatedClusterConf(t, 3, 0, func(c *Config) { c.BatchApplyCh = true })
	leader := leaderOf(t, nodes)

	leader.gate.arm()
	held := leader.raft.Apply([]byte("held"), 10*time.Second)
	<-leader.gate.entered // the leader loop is blocked in its own write
	queued := leader.raft.Apply([]byte("queued"), 10*time.Second)
	barrier := leader.raft.Barrier(10 * time.Second)
	shutdown := leader.raft.Shutdown() // closes the shutdown channel; the loop is still stuck

	for name, f := range map[string]Future{"queued apply": queued, "queued barrier": barrier} {
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrRaftShutdown) {
				t.Errorf("%s: %v, want ErrRaftShutdown", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: not answered 5 s after Shutdown", name)
		}
	}
	leader.gate.release <- errors.New("test over")
	if err := held.Error(); err == nil {
		t.Errorf("the held apply succeeded although its leader's write failed and Raft shut down")
	}
	// Only the first Shutdown's future waits for Raft's goroutines (the
	// cleanup's second call returns at once), and they log until they end.
	if err := shutdown.Error(); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// heartbeatTo calls r's heartbeat fast path from outside the main loop, as a
// transport's goroutine does, and returns its answer.
func heartbeatTo(t *testing.T, r *Raft, from *Raft, term uint64) (*AppendEntriesResponse, error) {
	t.Helper()
	respCh := make(chan RPCResponse, 1)
	req := &AppendEntriesRequest{
		RPCHeader: from.getRPCHeader(),
		Term:      term,
		Leader:    from.trans.EncodePeer(from.localID, from.localAddr),
	}
	r.processHeartbeat(RPC{Command: req, RespChan: respCh}) // the test's goroutine, not the main loop's
	select {
	case res := <-respCh:
		if res.Error != nil {
			return nil, res.Error
		}
		return res.Response.(*AppendEntriesResponse), nil
	default:
		t.Fatal("the heartbeat was not answered")
		return nil, nil
	}
}

// The fourth patch: the heartbeat fast path runs beside the main loop, so it
// must never change the server's term or state. Upstream's did: a leader
// handed a heartbeat of a newer term became a follower in that term behind
// its loop's back, and a dispatch already under way wrote entries under the
// newer term, colliding with the real leader's (hashicorp/raft#695). Here
// the leader refuses such a heartbeat, keeps its term and state, and writes
// its next entry in its own term; a follower of the same term is still
// answered on the fast path.
func TestRingKVHeartbeatFastPathNeverChangesTermOrState(t *testing.T) {
	nodes := gatedCluster(t)
	leader := leaderOf(t, nodes)
	var follower *gatedNode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	term := leader.raft.getCurrentTerm()

	// A newer term's heartbeat to the leader is refused, and changes nothing.
	if resp, err := heartbeatTo(t, leader.raft, follower.raft, term+1); !errors.Is(err, ErrHeartbeatNeedsMainLoop) {
		t.Fatalf("leader answered a heartbeat of term %d with %+v, %v; want ErrHeartbeatNeedsMainLoop", term+1, resp, err)
	}
	if got, state := leader.raft.getCurrentTerm(), leader.raft.getState(); got != term || state != Leader {
		t.Fatalf("after an off-thread heartbeat of term %d the leader is %v in term %d; want Leader in term %d", term+1, state, got, term)
	}
	f := leader.raft.Apply([]byte("after"), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("apply after the refused heartbeat: %v", err)
	}
	var l Log
	if err := leader.store.GetLog(f.Index(), &l); err != nil || l.Term != term {
		t.Fatalf("entry %d: term %d, %v; want the leader's term %d", f.Index(), l.Term, err, term)
	}

	// A heartbeat of the same term to another leader-side state (here the
	// leader itself) is refused too: only a follower takes the fast path.
	if _, err := heartbeatTo(t, leader.raft, follower.raft, term); !errors.Is(err, ErrHeartbeatNeedsMainLoop) {
		t.Fatalf("leader answered a same-term heartbeat with %v; want ErrHeartbeatNeedsMainLoop", err)
	}

	// An older term's heartbeat is told the newer term, as upstream.
	if resp, err := heartbeatTo(t, follower.raft, leader.raft, term-1); err != nil || resp.Success || resp.Term != term {
		t.Fatalf("follower answered a heartbeat of term %d with %+v, %v; want failure carrying term %d", term-1, resp, err, term)
	}

	// The leader's own heartbeat to a follower of its term takes the fast
	// path: answered at once, and counted as contact.
	before := follower.raft.LastContact()
	resp, err := heartbeatTo(t, follower.raft, leader.raft, term)
	if err != nil || !resp.Success || resp.Term != term {
		t.Fatalf("follower answered its leader's heartbeat with %+v, %v; want success in term %d", resp, err, term)
	}
	if !follower.raft.LastContact().After(before) {
		t.Error("the follower's last contact did not move on its leader's heartbeat")
	}
	if got := follower.raft.getState(); got != Follower {
		t.Errorf("follower is %v after its leader's heartbeat", got)
	}
}
