package raft

// Tests of the twelfth patch (fastpath.go): with a transport that sends
// without waiting, the leader's main loop sends a caught-up follower's new
// entries itself.

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// asyncTransport is an InmemTransport that also sends appends without
// waiting (WithAsyncAppend) and, like RingKV's, does not pipeline; it counts
// how appends with entries went out.
type asyncTransport struct {
	*InmemTransport
	fail      atomic.Bool  // asynchronous appends fail
	async     atomic.Int64 // AppendEntriesAsync calls
	syncItems atomic.Int64 // AppendEntries calls that carried entries
}

// AppendEntriesPipeline refuses, as RingKV's transport does (one append in
// flight per follower).
func (a *asyncTransport) AppendEntriesPipeline(ServerID, ServerAddress) (AppendPipeline, error) {
	return nil, ErrPipelineReplicationNotSupported
}

func (a *asyncTransport) AppendEntries(id ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse) error {
	if len(args.Entries) > 0 {
		a.syncItems.Add(1)
	}
	return a.InmemTransport.AppendEntries(id, target, args, resp)
}

func (a *asyncTransport) AppendEntriesAsync(id ServerID, target ServerAddress, args *AppendEntriesRequest, resp *AppendEntriesResponse, done func(error)) bool {
	a.async.Add(1)
	go func() {
		if a.fail.Load() {
			done(errors.New("asynchronous append failed (test)"))
			return
		}
		done(a.InmemTransport.AppendEntries(id, target, args, resp))
	}()
	return true
}

func asyncCluster(t *testing.T, tune func(*Config)) ([]*gatedNode, map[*gatedNode]*asyncTransport) {
	t.Helper()
	nodes := gatedClusterWith(t, 3, 0, tune, func(tr *InmemTransport) Transport {
		return &asyncTransport{InmemTransport: tr}
	})
	trans := make(map[*gatedNode]*asyncTransport)
	for _, n := range nodes {
		trans[n] = n.trans.(*asyncTransport)
	}
	return nodes, trans
}

// applyWithin applies data on r and fails the test unless the write commits
// within 5 s (Apply's timeout bounds only the enqueue).
func applyWithin(t *testing.T, r *Raft, data string) error {
	t.Helper()
	f := r.Apply([]byte(data), 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("write %q not committed within 5 s", data)
	}
}

// applyConcurrently runs writers goroutines that apply n entries each and
// fails the test if any write fails or does not commit within 5 s.
func applyConcurrently(t *testing.T, r *Raft, writers, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range n {
				if err := applyWithin(t, r, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					errs <- fmt.Errorf("writer %d, apply %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Concurrent writes go out on the fast path, and none waits for a commit
// refresh: with CommitTimeout an hour, an entry left behind by a lost
// wake-up (appended while a fast append held the token) would make its
// Apply time out.
func TestRingKVFastPathSendsNewEntries(t *testing.T) {
	nodes, trans := asyncCluster(t, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, nodes)
	lt := trans[leader]
	syncBefore := lt.syncItems.Load()

	const writers, each = 16, 100
	applyConcurrently(t, leader.raft, writers, each)

	if got := lt.async.Load(); got < each {
		t.Fatalf("the leader sent %d appends without waiting for %d writes; want the fast path to carry most of them", got, writers*each)
	}
	if got := lt.syncItems.Load() - syncBefore; got > lt.async.Load()/4 {
		t.Fatalf("the replication goroutines sent %d appends with entries against %d fast ones; want the fast path to carry most", got, lt.async.Load())
	}
	last := leader.raft.LastIndex()
	for _, n := range nodes {
		waitFor(t, "every node to store every entry", func() bool {
			idx, err := n.store.LastIndex()
			return err == nil && idx >= last
		})
	}
}

// A failed fast append hands the follower back to its replication
// goroutine, which delivers the entries; once an append succeeds again the
// fast path resumes.
func TestRingKVFastPathFailureFallsBack(t *testing.T) {
	nodes, trans := asyncCluster(t, func(c *Config) { c.CommitTimeout = time.Hour }) // only the hand-back can deliver
	leader := leaderOf(t, nodes)
	lt := trans[leader]

	// A lone write, once the fast path is open to both followers: nothing
	// else would trigger their replication goroutines.
	waitFor(t, "the fast path to open to both followers, with nothing in flight", func() bool {
		for _, s := range leader.raft.leaderState.replState {
			if !s.ok.Load() || len(s.token) > 0 || atomic.LoadUint64(&s.nextIndex) <= leader.raft.LastIndex() {
				return false
			}
		}
		return true
	})
	lt.fail.Store(true)
	syncBefore, asyncBefore := lt.syncItems.Load(), lt.async.Load()
	if err := applyWithin(t, leader.raft, "lone"); err != nil {
		t.Fatalf("a write whose fast appends failed: %v", err)
	}
	if lt.async.Load()-asyncBefore != 2 || lt.syncItems.Load() == syncBefore {
		t.Fatalf("want the write's fast appends to fail and the usual path to deliver it; fast appends %d, usual appends with entries %d",
			lt.async.Load()-asyncBefore, lt.syncItems.Load()-syncBefore)
	}
	applyConcurrently(t, leader.raft, 4, 20)

	lt.fail.Store(false)
	asyncBefore = lt.async.Load()
	applyConcurrently(t, leader.raft, 4, 20)
	if lt.async.Load() == asyncBefore {
		t.Fatal("after the failures ended, no append went out on the fast path again")
	}
	last := leader.raft.LastIndex()
	for _, n := range nodes {
		waitFor(t, "every node to store every entry", func() bool {
			idx, err := n.store.LastIndex()
			return err == nil && idx >= last
		})
	}
}

// A quiet group's replication goroutine waits with no commit refresh armed.
// After a fast append it must arm one, or a follower would not learn that
// the entry committed (and not apply it) until the next write.
func TestRingKVFastPathFollowersLearnTheCommit(t *testing.T) {
	nodes, trans := asyncCluster(t, func(c *Config) {
		c.QuiesceTimeout = 500 * time.Millisecond
		c.CommitTimeout = 20 * time.Millisecond
	})
	leader := leaderOf(t, nodes)
	lt := trans[leader]
	for i := range 3 {
		// Let the followers learn everything, so that the refresh is off.
		waitFor(t, "the followers to apply everything", func() bool {
			for _, n := range nodes {
				if n.raft.AppliedIndex() < leader.raft.LastIndex() {
					return false
				}
			}
			return true
		})
		waitFor(t, "the leader's commit refreshes to be off", func() bool {
			for _, s := range leader.raft.leaderState.replState {
				if s.tickArmed.Load() {
					return false
				}
			}
			return true
		})
		asyncBefore := lt.async.Load()
		if err := applyWithin(t, leader.raft, fmt.Sprintf("lone-%d", i)); err != nil {
			t.Fatal(err)
		}
		if lt.async.Load() == asyncBefore {
			t.Fatalf("write %d did not go out on the fast path", i)
		}
		want := leader.raft.LastIndex()
		for _, n := range nodes {
			waitFor(t, fmt.Sprintf("node %s to apply write %d", n.raft.localID, i), func() bool {
				return n.raft.AppliedIndex() >= want
			})
		}
	}
}

// The fast path's hardest race: an entry is appended while a fast append's
// answer holds the token and has just found nothing new to send. The main
// loop cannot take the token, so it triggers the replication goroutine,
// which cannot take it either and skips the trigger. Only the answer's last
// look, after it gives the token back, can then send the entry; with
// CommitTimeout an hour and no later write, nothing else would. The hooks
// hold the answer at that point until the goroutine has skipped.
func TestRingKVFastPathLastLookSendsWhatArrivedMeanwhile(t *testing.T) {
	nodes, _ := asyncCluster(t, func(c *Config) { c.CommitTimeout = time.Hour })
	leader := leaderOf(t, nodes)
	waitFor(t, "the fast path to open to both followers, with nothing in flight", func() bool {
		for _, s := range leader.raft.leaderState.replState {
			if !s.ok.Load() || len(s.token) > 0 || atomic.LoadUint64(&s.nextIndex) <= leader.raft.LastIndex() {
				return false
			}
		}
		return true
	})

	var (
		target  atomic.Pointer[followerReplication]
		holding = make(chan *followerReplication, 1)
		goOn    = make(chan struct{})
		skipped = make(chan struct{}, 1)
	)
	fastPathTestHooks.Store(&fastPathHooks{
		nothingToSend: func(s *followerReplication) {
			if !target.CompareAndSwap(nil, s) {
				return // only the first answer to find nothing is held
			}
			holding <- s
			select {
			case <-goOn:
			case <-time.After(10 * time.Second):
			}
		},
		triggerSkipped: func(s *followerReplication) {
			if target.Load() == s {
				select {
				case skipped <- struct{}{}:
				default:
				}
			}
		},
	})
	t.Cleanup(func() { fastPathTestHooks.Store(nil) })

	first := leader.raft.Apply([]byte("first"), 5*time.Second)
	var s *followerReplication
	select {
	case s = <-holding:
	case <-time.After(5 * time.Second):
		t.Fatal("no fast append's answer found nothing new to send within 5 s")
	}
	second := leader.raft.Apply([]byte("second"), 5*time.Second)
	select {
	case <-skipped:
	case <-time.After(5 * time.Second):
		close(goOn)
		t.Fatal("the held follower's replication goroutine did not skip the second write's trigger within 5 s")
	}
	close(goOn)
	for _, f := range []ApplyFuture{first, second} {
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
	}
	want := second.Index()
	s.peerLock.RLock()
	id := s.peer.ID
	s.peerLock.RUnlock()
	for _, n := range nodes {
		if n.raft.localID != id {
			continue
		}
		waitFor(t, fmt.Sprintf("follower %s, held at the race, to store the second write (index %d)", id, want), func() bool {
			idx, err := n.store.LastIndex()
			return err == nil && idx >= want
		})
		return
	}
	t.Fatalf("no node is follower %s", id)
}
