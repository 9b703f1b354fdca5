package replica

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
)

// Limits on one coalesced Raft entry.
const (
	maxBatchCommands = 256
	maxBatchBytes    = 1 << 20
)

// proposal is one caller's commands waiting for a Raft entry.
type proposal struct {
	cmds []raftfsm.Command
	done chan proposeResult // buffered: the proposer never blocks on it
}

type proposeResult struct {
	results []raftfsm.Result
	index   uint64
	err     error
}

// Propose replicates cmds and returns their results once the entry that
// carries them is committed and applied; index is that entry's Raft index.
// Concurrent proposals are coalesced: while one entry is being handed to
// Raft, the ones that arrive wait and then share the next entry, so a busy
// partition writes few large entries instead of many small ones.
func (r *Replica) Propose(ctx context.Context, cmds []raftfsm.Command) ([]raftfsm.Result, uint64, error) {
	if r.closed.Load() {
		return nil, 0, ErrClosed
	}
	if r.raft.State() != raft.Leader {
		return nil, 0, r.notLeader()
	}
	p := &proposal{cmds: cmds, done: make(chan proposeResult, 1)}
	select {
	case r.propCh <- p:
	case <-ctx.Done():
		return nil, 0, ctx.Err() // never handed to Raft
	case <-r.stop:
		return nil, 0, ErrClosed
	}
	select {
	case res := <-p.done:
		return res.results, res.index, res.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ctx.Err())
	case <-r.stop:
		return nil, 0, fmt.Errorf("%w: replica shut down while the write was in flight", ErrOutcomeUnknown)
	}
}

// runProposer takes waiting proposals, as many as fit in one entry, and
// hands them to Raft as one entry.
func (r *Replica) runProposer() {
	defer r.wg.Done()
	for {
		var first *proposal
		select {
		case <-r.stop:
			return
		case first = <-r.propCh:
		}
		batch, cmds := takeBatch(first, r.propCh)
		f := r.raft.Apply(raftfsm.EncodeBatch(nil, cmds), 5*time.Second)
		r.wg.Add(1)
		go r.complete(f, batch, len(cmds))
	}
}

// takeBatch adds to first every proposal already waiting in ch, within the
// entry limits, and returns them with their commands in order.
func takeBatch(first *proposal, ch <-chan *proposal) ([]*proposal, []raftfsm.Command) {
	batch := []*proposal{first}
	n, size := len(first.cmds), commandBytes(first.cmds)
fill:
	for n < maxBatchCommands && size < maxBatchBytes {
		select {
		case p := <-ch:
			batch = append(batch, p)
			n += len(p.cmds)
			size += commandBytes(p.cmds)
		default:
			break fill
		}
	}
	if len(batch) == 1 {
		return batch, first.cmds
	}
	cmds := make([]raftfsm.Command, 0, n)
	for _, p := range batch {
		cmds = append(cmds, p.cmds...)
	}
	return batch, cmds
}

// complete waits for an entry's fate and answers each proposal in it.
func (r *Replica) complete(f raft.ApplyFuture, batch []*proposal, n int) {
	defer r.wg.Done()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-r.stop:
		// A future still queued in Raft at shutdown is never answered
		// (hashicorp/raft#498).
		err = raft.ErrRaftShutdown
	}
	var all []raftfsm.Result
	switch {
	case errors.Is(err, raft.ErrRaftShutdown):
		err = fmt.Errorf("%w: replica shut down while the write was in flight", ErrOutcomeUnknown)
	case err != nil:
		err = r.translate(err, true)
	default:
		var ok bool
		if all, ok = f.Response().([]raftfsm.Result); !ok || len(all) != n {
			err = fmt.Errorf("replica %d: state machine returned %T for %d commands", r.cfg.Partition, f.Response(), n)
		}
	}
	off := 0
	for _, p := range batch {
		res := proposeResult{err: err}
		if err == nil {
			res.results, res.index = all[off:off+len(p.cmds)], f.Index()
		}
		off += len(p.cmds)
		p.done <- res
	}
}

func commandBytes(cmds []raftfsm.Command) int {
	n := 0
	for _, c := range cmds {
		n += len(c.Key) + len(c.Value) + len(c.ExpectedValue) + 32
	}
	return n
}
