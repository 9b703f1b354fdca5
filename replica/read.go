package replica

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// watchLeadership follows Raft's leadership notifications. On becoming leader
// it applies a barrier, which commits an entry of the new term and applies
// everything before it; only then may strong reads be served in that term.
func (r *Replica) watchLeadership() {
	defer r.wg.Done()
	for {
		select {
		case <-r.stop:
			return
		case isLeader := <-r.notifyCh:
			if !isLeader {
				r.setReady(0)
			} else {
				term := r.raft.CurrentTerm()
				r.wg.Add(1)
				go func() {
					defer r.wg.Done()
					err := r.barrier()
					if err == nil && r.raft.State() == raft.Leader && r.raft.CurrentTerm() == term {
						r.setReady(term)
					} else if err != nil {
						r.log.Debug("barrier after election failed", "term", term, "error", err)
					}
				}()
			}
			if r.cfg.OnLeaderChange != nil {
				r.cfg.OnLeaderChange(r.cfg.Partition, isLeader)
			}
		}
	}
}

// barrier runs raft.Barrier. A barrier still queued in Raft's apply channel
// at shutdown answers ErrRaftShutdown (the raft patch's third part; upstream
// never answers it, hashicorp/raft#498), so Close, which shuts Raft down
// first, never waits for it long.
func (r *Replica) barrier() error {
	return r.raft.Barrier(r.cfg.ElectionTimeout * 5).Error()
}

func (r *Replica) setReady(term uint64) {
	r.readyMu.Lock()
	r.readyTerm.Store(term)
	close(r.readyCh)
	r.readyCh = make(chan struct{})
	r.readyMu.Unlock()
}

// awaitReady waits until this replica is leader and has applied its
// post-election barrier, and returns the term.
func (r *Replica) awaitReady(ctx context.Context) (uint64, error) {
	for {
		if r.raft.State() != raft.Leader {
			return 0, r.notLeader()
		}
		r.readyMu.Lock()
		ch := r.readyCh
		t := r.readyTerm.Load()
		r.readyMu.Unlock()
		if t != 0 && t == r.raft.CurrentTerm() {
			return t, nil
		}
		timer := time.NewTimer(r.cfg.HeartbeatTimeout / 4)
		select {
		case <-ch:
		case <-timer.C:
		case <-r.stop:
			timer.Stop()
			return 0, ErrClosed
		case <-ctx.Done():
			timer.Stop()
			return 0, ctx.Err()
		}
		timer.Stop()
	}
}

// waitApplied returns once every command entry up to index has been applied
// to the FSM. Raft hands the FSM only command and configuration entries, so
// the FSM's own applied index can stay below index when the last entries are
// no-ops or barriers: then Raft's dispatch index and a look at those entries
// decide.
func (r *Replica) waitApplied(ctx context.Context, index uint64) error {
	for {
		applied := r.fsm.AppliedIndex()
		if applied >= index {
			return nil
		}
		if r.raft.AppliedIndex() >= index && r.onlyInertEntries(applied+1, index) {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
		err := r.fsm.WaitApplied(wctx, index)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case r.closed.Load():
			return ErrClosed
		}
	}
}

// onlyInertEntries reports whether every entry in [lo, hi] is one the FSM
// never sees (no-op or barrier). It looks at a bounded number of entries.
func (r *Replica) onlyInertEntries(lo, hi uint64) bool {
	if hi-lo > 64 {
		return false
	}
	var l raft.Log
	for i := lo; i <= hi; i++ {
		if err := r.logs.GetLog(i, &l); err != nil {
			return false
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

// verifier shares leadership confirmations among concurrent strong reads. A
// read joins the next round that has not started yet, so the round that
// answers it began after the read noted its commit index.
type verifier struct {
	ra *raft.Raft
	// urgent, if set, marks the heartbeats of a round as urgent so they do
	// not linger (see Config.Heartbeats); call what it returns after the round.
	urgent  func() (done func())
	mu      sync.Mutex
	running bool
	next    *round
}

type round struct {
	done chan struct{}
	err  error
}

func newVerifier(ra *raft.Raft) *verifier { return &verifier{ra: ra} }

func (v *verifier) confirm(ctx context.Context) error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &round{done: make(chan struct{})}
	}
	rd := v.next
	if !v.running {
		v.running = true
		v.next = nil
		go v.run(rd)
	}
	v.mu.Unlock()
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *verifier) run(rd *round) {
	for rd != nil {
		done := func() {}
		if v.urgent != nil {
			done = v.urgent()
		}
		rd.err = v.ra.VerifyLeader().Error()
		done()
		close(rd.done)
		v.mu.Lock()
		rd = v.next
		v.next = nil
		if rd == nil {
			v.running = false
		}
		v.mu.Unlock()
	}
}
