package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
)

// Limits on one coalesced Raft entry, and on the proposals waiting for one.
const (
	maxBatchCommands = 256
	maxBatchBytes    = 1 << 20
	maxQueued        = 4096
)

// proposal is one caller's commands waiting for a Raft entry.
type proposal struct {
	cmds []raftfsm.Command
	done chan proposeResult // buffered: the answer never blocks its sender
}

type proposeResult struct {
	results []raftfsm.Result
	index   uint64
	err     error
}

// inflight is one Raft entry on its way and the proposals it carries. It is
// answered exactly once, by whoever takes it out of Replica.pending first:
// the state machine when it applies the entry on this node (the usual
// case), or the completer when the entry's future fails.
type inflight struct {
	tag   uint64
	batch []*proposal
	n     int // commands in the entry
	f     raft.ApplyFuture
}

// entryTagLen is the size of the tag an entry carries in raft.Log.Extensions:
// the replica's random nonce, then the entry's sequence number. Only the
// replica instance that proposed an entry recognises its tag; followers,
// other nodes and later runs of this node ignore it.
const entryTagLen = 16

// Propose replicates cmds and returns their results once the entry that
// carries them is committed and applied; index is that entry's Raft index.
//
// Concurrent proposals are coalesced without a goroutine of their own: a
// caller that finds nobody handing proposals to Raft does it itself, for
// its own and for every proposal queued meanwhile, as few entries as the
// limits allow. So a lone write costs no extra hand-off. Proposals share an
// entry only when they queue while raft.ApplyLog blocks (Raft's apply
// channel, 256 futures, is full); below that each is its own entry, and
// Raft's leader loop writes and sends the ready entries together (see
// replica/DESIGN.md, "Writes"). The results come straight from the state
// machine's apply (fsmAdapter), not from a goroutine waiting on the entry's
// future.
func (r *Replica) Propose(ctx context.Context, cmds []raftfsm.Command) ([]raftfsm.Result, uint64, error) {
	if r.closed.Load() {
		return nil, 0, ErrClosed
	}
	if r.raft.State() != raft.Leader {
		return nil, 0, r.notLeader()
	}
	p := &proposal{cmds: cmds, done: make(chan proposeResult, 1)}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err() // never handed to Raft
	case <-r.stop:
		return nil, 0, ErrClosed
	}
	r.propMu.Lock()
	r.queue = append(r.queue, p)
	if !r.handing {
		r.handing = true
		r.handQueue()
		r.handing = false
	}
	r.propMu.Unlock()
	select {
	case res := <-p.done:
		return res.results, res.index, res.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ctx.Err())
	case <-r.stop:
		return nil, 0, fmt.Errorf("%w: replica shut down while the write was in flight", ErrOutcomeUnknown)
	}
}

// handQueue hands every queued proposal to Raft, as few entries as the
// limits allow. It is called, and returns, with propMu held, and releases
// it around each raft.ApplyLog (which may block while Raft's apply queue is
// full), so proposals arriving meanwhile queue up for the next entry.
func (r *Replica) handQueue() {
	for len(r.queue) > 0 {
		k, cmds := takeBatch(r.queue)
		e := &inflight{tag: r.nextTag, batch: r.queue[:k:k], n: len(cmds)}
		r.nextTag++
		if r.queue = r.queue[k:]; len(r.queue) == 0 {
			r.queue = nil
		}
		r.pending[e.tag] = e
		r.propMu.Unlock()
		for range k {
			<-r.slots
		}
		var ext [entryTagLen]byte
		binary.BigEndian.PutUint64(ext[:8], r.tagNonce)
		binary.BigEndian.PutUint64(ext[8:], e.tag)
		e.f = r.raft.ApplyLog(raft.Log{Data: raftfsm.EncodeBatch(nil, cmds), Extensions: ext[:]}, 5*time.Second)
		select {
		case r.inflight <- e:
		case <-r.stop: // the waiting callers return on stop themselves
		}
		r.propMu.Lock()
	}
}

// takeBatch returns how many of the queued proposals (at least one) share
// the next entry within the entry limits, and their commands in order.
func takeBatch(queue []*proposal) (int, []raftfsm.Command) {
	first := queue[0]
	k, n, size := 1, len(first.cmds), commandBytes(first.cmds)
	for k < len(queue) && n < maxBatchCommands && size < maxBatchBytes {
		n += len(queue[k].cmds)
		size += commandBytes(queue[k].cmds)
		k++
	}
	if k == 1 {
		return 1, first.cmds
	}
	cmds := make([]raftfsm.Command, 0, n)
	for _, p := range queue[:k] {
		cmds = append(cmds, p.cmds...)
	}
	return k, cmds
}

// claim takes the entry tagged tag out of pending: nil if it was answered
// already (or is not this replica's).
func (r *Replica) claim(tag uint64) *inflight {
	r.propMu.Lock()
	defer r.propMu.Unlock()
	e := r.pending[tag]
	delete(r.pending, tag)
	return e
}

// ownTag returns the sequence number of an entry this replica instance
// proposed, from its raft.Log.Extensions.
func (r *Replica) ownTag(ext []byte) (uint64, bool) {
	if len(ext) != entryTagLen || binary.BigEndian.Uint64(ext[:8]) != r.tagNonce {
		return 0, false
	}
	return binary.BigEndian.Uint64(ext[8:]), true
}

// answered is called by the state machine with the results of an entry it
// applied; if this replica proposed the entry, its proposals get them now.
func (r *Replica) answered(l *raft.Log, results any) {
	tag, ok := r.ownTag(l.Extensions)
	if !ok {
		return
	}
	if e := r.claim(tag); e != nil {
		r.answer(e, results, l.Index, nil)
	}
}

// answer splits an entry's results among its proposals, or gives each the
// error.
func (r *Replica) answer(e *inflight, results any, index uint64, err error) {
	var all []raftfsm.Result
	if err == nil {
		var ok bool
		if all, ok = results.([]raftfsm.Result); !ok || len(all) != e.n {
			err = fmt.Errorf("replica %d: state machine returned %T for %d commands", r.cfg.Partition, results, e.n)
		}
	}
	off := 0
	for _, p := range e.batch {
		res := proposeResult{err: err}
		if err == nil {
			res.results, res.index = all[off:off+len(p.cmds)], index
		}
		off += len(p.cmds)
		p.done <- res
	}
}

// runCompleter waits for each entry's future, in the order they were
// proposed, and answers the entries whose future failed (leadership lost,
// enqueue timeout, shutdown). An entry that was applied has its answer
// already. ApplyLog's futures return at Raft's shutdown even if never
// dispatched (the raft patch, RINGKV.md), so this never blocks Close.
func (r *Replica) runCompleter() {
	defer r.wg.Done()
	for {
		var e *inflight
		select {
		case <-r.stop:
			return
		case e = <-r.inflight:
		}
		err := e.f.Error()
		e2 := r.claim(e.tag)
		if e2 == nil {
			continue
		}
		switch {
		case errors.Is(err, raft.ErrRaftShutdown):
			err = fmt.Errorf("%w: replica shut down while the write was in flight", ErrOutcomeUnknown)
		case err != nil:
			err = r.translate(err, true)
		}
		var results any
		var index uint64
		if err == nil {
			// Applied, yet the state machine did not answer: cannot happen
			// while the entry reaches the FSM with its tag, but the future
			// holds the same results.
			results, index = e.f.Response(), e.f.Index()
		}
		r.answer(e2, results, index, err)
	}
}

func commandBytes(cmds []raftfsm.Command) int {
	n := 0
	for _, c := range cmds {
		n += len(c.Key) + len(c.Value) + len(c.ExpectedValue) + 32
	}
	return n
}
