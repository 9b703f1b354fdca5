package raft

// Tests of RingKV's leadership checks (verify.go, RINGKV.md).

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// heldTransport holds every heartbeat (an append without entries) while
// holding is set, until release is closed, and then delivers it; while cut
// is set it fails every append at once instead.
type heldTransport struct {
	*InmemTransport
	holding atomic.Bool
	held    atomic.Int64
	cut     atomic.Bool
	release chan struct{}
}

var errCut = errors.New("cut off by the test")

func (h *heldTransport) AppendEntries(id ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse) error {
	if h.cut.Load() {
		return errCut
	}
	if len(args.Entries) == 0 && h.holding.Load() {
		h.held.Add(1)
		<-h.release
	}
	return h.InmemTransport.AppendEntries(id, target, args, resp)
}

func (h *heldTransport) AppendEntriesPipeline(id ServerID, target ServerAddress) (AppendPipeline, error) {
	if h.cut.Load() {
		return nil, errCut
	}
	p, err := h.InmemTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &heldPipeline{AppendPipeline: p, cut: &h.cut}, nil
}

// heldPipeline fails pipelined appends once its transport is cut.
type heldPipeline struct {
	AppendPipeline
	cut *atomic.Bool
}

func (p *heldPipeline) AppendEntries(args *AppendEntriesRequest, resp *AppendEntriesResponse) (AppendFuture, error) {
	if p.cut.Load() {
		return nil, errCut
	}
	return p.AppendPipeline.AppendEntries(args, resp)
}

// heldCluster starts three bootstrapped nodes (quiescence off) and returns
// the leader and its transport.
func heldCluster(t *testing.T) (*Raft, *heldTransport) {
	t.Helper()
	var (
		rafts  []*Raft
		trans  []*heldTransport
		config Configuration
	)
	for i := range 3 {
		addr, tr := NewInmemTransport(ServerAddress(fmt.Sprintf("v%d", i)))
		trans = append(trans, &heldTransport{InmemTransport: tr, release: make(chan struct{})})
		config.Servers = append(config.Servers, Server{Suffrage: Voter, ID: ServerID(addr), Address: addr})
	}
	for _, a := range trans {
		for _, b := range trans {
			if a != b {
				a.Connect(b.LocalAddr(), b.InmemTransport)
			}
		}
	}
	for _, tr := range trans {
		store := NewInmemStore()
		conf := inmemConfig(t)
		conf.LocalID = ServerID(tr.LocalAddr())
		snaps := NewInmemSnapshotStore()
		if err := BootstrapCluster(conf, store, store, snaps, tr, config); err != nil {
			t.Fatal(err)
		}
		r, err := NewRaft(conf, &MockFSM{}, store, store, snaps, tr)
		if err != nil {
			t.Fatal(err)
		}
		rafts = append(rafts, r)
	}
	t.Cleanup(func() {
		for _, tr := range trans {
			tr.cut.Store(true)
			select {
			case <-tr.release: // the test released it
			default:
				close(tr.release)
			}
		}
		for _, r := range rafts {
			_ = r.Shutdown().Error()
		}
	})
	var leader *Raft
	waitFor(t, "a leader", func() bool {
		for _, r := range rafts {
			if r.State() == Leader {
				leader = r
				return true
			}
		}
		return false
	})
	for i, r := range rafts {
		if r == leader {
			return leader, trans[i]
		}
	}
	panic("unreachable")
}

// triggered reports whether a leadership check has asked every follower's
// heartbeat goroutine for a heartbeat that it has not taken up yet (they are
// held here). (replState is written only by the leader loop on a
// configuration change; there is none here.)
func triggered(r *Raft) bool {
	for _, repl := range r.leaderState.replState {
		if len(repl.notifyCh) == 0 {
			return false
		}
	}
	return len(r.leaderState.replState) > 0
}

// errorWithin returns f's error, failing the test if it has none within d.
func errorWithin(t *testing.T, f Future, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("the future did not resolve within %v", d)
		return nil
	}
}

// A leadership check counts only acknowledgements of heartbeats sent after
// it started. Here both followers' heartbeats are on their way (held by the
// transport) when VerifyLeader starts, and the followers are cut off right
// after: the held heartbeats still arrive and are acknowledged, but they
// prove nothing about the time after the check started, so it must fail
// (the leader steps down without its quorum). Upstream counted them and
// confirmed the leadership.
func TestRingKVVerifyIgnoresHeartbeatsSentBeforeIt(t *testing.T) {
	leader, tr := heldCluster(t)
	if err := errorWithin(t, leader.VerifyLeader(), 5*time.Second); err != nil {
		t.Fatalf("a check with both followers in touch: %v", err)
	}

	tr.holding.Store(true)
	waitFor(t, "heartbeats to both followers held", func() bool { return tr.held.Load() >= 2 })
	v := leader.VerifyLeader()
	waitFor(t, "the check registered with both followers", func() bool { return triggered(leader) })
	tr.cut.Store(true)
	close(tr.release)

	if err := errorWithin(t, v, 5*time.Second); err == nil {
		t.Fatal("VerifyLeader confirmed the leadership on acknowledgements of heartbeats sent before it started, with both followers cut off since")
	}
}

// A check that starts while heartbeats are on their way is confirmed by the
// ones sent after it (the held ones no longer count), with the followers in
// touch.
func TestRingKVVerifyAfterHeldHeartbeatsIsConfirmed(t *testing.T) {
	leader, tr := heldCluster(t)
	tr.holding.Store(true)
	waitFor(t, "heartbeats to both followers held", func() bool { return tr.held.Load() >= 2 })
	v := leader.VerifyLeader()
	waitFor(t, "the check registered with both followers", func() bool { return triggered(leader) })
	tr.holding.Store(false)
	close(tr.release)
	if err := errorWithin(t, v, 5*time.Second); err != nil {
		t.Fatalf("a check started while heartbeats were held, followers in touch: %v", err)
	}
}
