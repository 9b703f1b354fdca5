package raft

// Tests of the patch's fifth part (RINGKV.md): the slices that carry entries
// to the state machine and to followers are sized for their entries, not for
// MaxAppendEntries.

import (
	"testing"
	"time"
)

func TestRingKVEntrySlicesAreSizedForTheirEntries(t *testing.T) {
	store := NewInmemStore()
	for i := uint64(1); i <= 13; i++ {
		if err := store.StoreLog(&Log{Index: i, Term: 1, Type: LogCommand, Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	r := &Raft{logs: store, fsmMutateCh: make(chan interface{}, 8), shutdownCh: make(chan struct{})}
	r.conf.Store(Config{MaxAppendEntries: 256})
	r.fsmLock.Lock() // as if runFSM were busy: batches go to fsmMutateCh (no inline apply)

	var req AppendEntriesRequest
	if err := r.setNewLogs(&req, 4, 6); err != nil {
		t.Fatal(err)
	}
	if len(req.Entries) != 3 || cap(req.Entries) != 3 || req.Entries[0].Index != 4 {
		t.Errorf("setNewLogs(4, 6): %d entries, capacity %d; want entries 4-6, capacity 3 (not MaxAppendEntries 256)",
			len(req.Entries), cap(req.Entries))
	}

	batch := func() []*commitTuple {
		t.Helper()
		select {
		case b := <-r.fsmMutateCh:
			return b.([]*commitTuple)
		default:
			t.Fatal("processLogs sent no batch to the state machine")
			return nil
		}
	}
	r.processLogs(2, nil)
	if b := batch(); len(b) != 2 || cap(b) != 2 {
		t.Errorf("processLogs(2) from 0: a batch of %d with capacity %d; want 2 and 2 (not 256)", len(b), cap(b))
	}

	// Eleven entries at most 4 per batch: 4, 4 and 3, each slice just as long.
	r.conf.Store(Config{MaxAppendEntries: 4})
	r.processLogs(13, nil)
	for _, want := range []int{4, 4, 3} {
		if b := batch(); len(b) != want || cap(b) != want {
			t.Errorf("processLogs(13) from 2: a batch of %d with capacity %d; want %d and %d", len(b), cap(b), want, want)
		}
	}
	if got := r.getLastApplied(); got != 13 {
		t.Errorf("last applied %d after processLogs(13), want 13", got)
	}
}

// Tests of the eleventh patch (RINGKV.md): ApplyLog starts no timer when the
// apply channel has room, and the commit index is recalculated without
// allocating.

func TestRingKVApplyLogStartsNoTimerWhenTheChannelHasRoom(t *testing.T) {
	r := &Raft{applyCh: make(chan *logFuture, 1024), shutdownCh: make(chan struct{})}
	allocs := testing.AllocsPerRun(100, func() {
		f := r.ApplyLog(Log{}, 5*time.Second)
		if _, ok := f.(*logFuture); !ok {
			t.Fatalf("ApplyLog returned %T, want a queued *logFuture", f)
		}
		<-r.applyCh
	})
	// The future, and its error channel and that channel's buffer. Upstream
	// allocates 6 here: also a timer and its channel (time.After).
	if allocs > 3 {
		t.Errorf("ApplyLog allocates %.0f objects with room in the apply channel; want at most 3 (no timer)", allocs)
	}

	// A full channel still times out, and a shut-down Raft still says so.
	full := &Raft{applyCh: make(chan *logFuture), shutdownCh: make(chan struct{})}
	if err := full.ApplyLog(Log{}, 20*time.Millisecond).Error(); err != ErrEnqueueTimeout {
		t.Errorf("ApplyLog on a full apply channel: %v, want ErrEnqueueTimeout", err)
	}
	close(full.shutdownCh)
	if err := full.ApplyLog(Log{}, time.Hour).Error(); err != ErrRaftShutdown {
		t.Errorf("ApplyLog after shutdown: %v, want ErrRaftShutdown", err)
	}
	shut := &Raft{applyCh: make(chan *logFuture, 1), shutdownCh: make(chan struct{})}
	close(shut.shutdownCh)
	if err := shut.ApplyLog(Log{}, 0).Error(); err != ErrRaftShutdown {
		t.Errorf("ApplyLog after shutdown with room in the channel: %v, want ErrRaftShutdown", err)
	}
}

func TestRingKVCommitmentRecalculatesWithoutAllocating(t *testing.T) {
	cfg := Configuration{Servers: []Server{{Suffrage: Voter, ID: "a"}, {Suffrage: Voter, ID: "b"}, {Suffrage: Voter, ID: "c"}}}
	c := newCommitment(make(chan struct{}, 1), cfg, 1)
	next := uint64(1)
	c.match("a", next) // sizes the scratch slice
	allocs := testing.AllocsPerRun(100, func() {
		next++
		c.match("a", next)
		c.match("b", next)
	})
	if allocs != 0 {
		t.Errorf("match allocates %.1f objects per call pair; want 0", allocs)
	}
	if got := c.getCommitIndex(); got != next {
		t.Errorf("commit index %d after a and b matched %d of 3 voters; want %d", got, next, next)
	}
	c.match("c", next+5) // one voter ahead is not a quorum
	if got := c.getCommitIndex(); got != next {
		t.Errorf("commit index %d after only c matched %d; want %d", got, next+5, next)
	}
}
