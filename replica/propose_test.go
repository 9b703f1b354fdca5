package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
)

// Proposals of several commands, coalesced with others into shared
// entries, each get back exactly their own results: a failed CAS reports
// the value of its own key, and a proposal's commands share one version.
// The test holds the hand-off (handing) until every proposal has queued,
// as a blocked raft.ApplyLog would, so they do share entries: left to
// themselves they rarely do (replica/DESIGN.md, "Writes").
func TestCoalescedProposalsGetTheirOwnResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		const writers = 100
		errs := make(chan error, writers)
		before := l.raft.LastIndex()
		l.propMu.Lock()
		l.handing = true
		l.propMu.Unlock()
		for i := range writers {
			go func() {
				key := fmt.Sprintf("k%03d", i)
				cmds := []raftfsm.Command{
					{Kind: raftfsm.KindPut, Key: []byte(key), Value: []byte("v" + key)},
					{Kind: raftfsm.KindCAS, Key: []byte(key), Expect: raftfsm.ExpectAbsent, Value: []byte("never")},
					{Kind: raftfsm.KindDelete, Key: []byte("absent-" + key)},
				}
				res, index, err := l.Propose(context.Background(), cmds)
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s: %w", key, err)
				case len(res) != 3:
					errs <- fmt.Errorf("%s: %d results for 3 commands", key, len(res))
				case res[0].Status != raftfsm.StatusOK || res[0].Version != index:
					errs <- fmt.Errorf("%s: put %+v at index %d", key, res[0], index)
				case res[1].Status != raftfsm.StatusCompareFailed || string(res[1].Value) != "v"+key || res[1].Version != index:
					errs <- fmt.Errorf("%s: CAS %+v, want it failed against its own key's value", key, res[1])
				case res[2].Status != raftfsm.StatusNotFound:
					errs <- fmt.Errorf("%s: delete %+v, want not found", key, res[2])
				default:
					errs <- nil
				}
			}()
		}
		synctest.Wait() // every writer has queued its proposal and waits
		l.propMu.Lock()
		queued := len(l.queue)
		l.handQueue()
		l.handing = false
		l.propMu.Unlock()
		if queued != writers {
			t.Errorf("%d proposals queued before the hand-off, want %d", queued, writers)
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		l.propMu.Lock()
		defer l.propMu.Unlock()
		if len(l.pending) != 0 || len(l.queue) != 0 || l.handing {
			t.Fatalf("after every answer: %d entries pending, %d proposals queued, handing %v", len(l.pending), len(l.queue), l.handing)
		}
		// 300 commands at most maxBatchCommands (256) per entry: 86
		// proposals (258 commands) in the first, 14 in the second.
		if entries := l.raft.LastIndex() - before; entries != 2 {
			t.Fatalf("%d proposals of 3 commands took %d entries, want 2", writers, entries)
		}
	})
}

// An entry is answered only by the replica instance that proposed it: a
// tag with another nonce (another node, or this node before a restart) is
// ignored, and an entry is never answered twice.
func TestEntryTagsAnswerOnlyTheirProposer(t *testing.T) {
	r := &Replica{tagNonce: 41, pending: map[uint64]*inflight{}}
	p := &proposal{cmds: make([]raftfsm.Command, 2), done: make(chan proposeResult, 1)}
	r.pending[7] = &inflight{tag: 7, batch: []*proposal{p}, n: 2}
	tagged := func(nonce, tag uint64) *raft.Log {
		ext := make([]byte, entryTagLen)
		binary.BigEndian.PutUint64(ext, nonce)
		binary.BigEndian.PutUint64(ext[8:], tag)
		return &raft.Log{Index: 99, Extensions: ext}
	}
	results := []raftfsm.Result{{Status: raftfsm.StatusOK, Version: 99}, {Status: raftfsm.StatusNotFound}}

	for _, l := range []*raft.Log{tagged(42, 7), tagged(41, 8), {Index: 99}, {Index: 99, Extensions: []byte("short")}} {
		r.answered(l, results)
	}
	select {
	case res := <-p.done:
		t.Fatalf("answered by a foreign or missing tag: %+v", res)
	default:
	}
	r.answered(tagged(41, 7), results)
	res := <-p.done
	if res.err != nil || res.index != 99 || len(res.results) != 2 || res.results[1].Status != raftfsm.StatusNotFound {
		t.Fatalf("answer %+v", res)
	}
	r.answered(tagged(41, 7), results) // again: already claimed
	if e := r.claim(7); e != nil || len(p.done) != 0 {
		t.Fatalf("entry answered twice")
	}
	// A state machine result that does not fit the entry is an error, not a panic.
	q := &proposal{cmds: make([]raftfsm.Command, 2), done: make(chan proposeResult, 1)}
	r.pending[8] = &inflight{tag: 8, batch: []*proposal{q}, n: 2}
	r.answered(tagged(41, 8), []raftfsm.Result{{}})
	if res := <-q.done; res.err == nil {
		t.Fatalf("a result count mismatch was answered as success: %+v", res)
	}
}

// Writes in flight on a leader that cannot commit (its followers are cut
// off) are all answered when the replica closes, and Close returns.
func TestCloseAnswersWritesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		g.isolate(l.cfg.NodeID)
		const writers = 20
		errs := make(chan error, writers)
		for i := range writers {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_, _, err := l.Propose(ctx, []raftfsm.Command{put(fmt.Sprintf("w%d", i), "v", uint64(i+1))})
				errs <- err
			}()
		}
		synctest.Wait() // every writer is queued or waiting on its entry
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for range writers {
			err := <-errs
			var nl *NotLeaderError
			if err == nil || !(errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrClosed) || errors.As(err, &nl)) {
				t.Errorf("write on a closed, cut-off leader: %v; want outcome unknown, closed or not leader", err)
			}
		}
	})
}
