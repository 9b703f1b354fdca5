package raft

// Tests of the patch's ninth part (RINGKV.md): the main loop applies a batch
// itself when runFSM has nothing queued, and never ahead of a batch it
// queued for runFSM.

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// indexFSM records the index of every log it applies, in order.
type indexFSM struct {
	MockFSM
	applied []uint64
}

func (f *indexFSM) ApplyBatch(logs []*Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		f.applied = append(f.applied, l.Index)
		out[i] = l.Index
	}
	return out
}

func TestRingKVInlineApplyKeepsLogOrder(t *testing.T) {
	store := NewInmemStore()
	for i := uint64(1); i <= 8; i++ {
		if err := store.StoreLog(&Log{Index: i, Term: 1, Type: LogCommand, Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	fsm := &indexFSM{}
	r := &Raft{logs: store, fsm: fsm, fsmMutateCh: make(chan interface{}, 8), shutdownCh: make(chan struct{})}
	r.conf.Store(Config{MaxAppendEntries: 256})
	r.fsmRunner = newFSMRunner(r)
	applied := func() string {
		r.fsmLock.Lock()
		defer r.fsmLock.Unlock()
		return fmt.Sprint(fsm.applied)
	}

	// runFSM idle, nothing queued: applied at once, on this goroutine.
	r.processLogs(2, nil)
	if got := applied(); got != "[1 2]" {
		t.Fatalf("after processLogs(2) with runFSM idle: applied %s, want [1 2] at once", got)
	}
	if n := len(r.fsmMutateCh); n != 0 {
		t.Fatalf("after an inline apply: %d requests queued for runFSM, want 0", n)
	}

	// runFSM busy (say, taking a snapshot): the batch is queued.
	r.fsmLock.Lock()
	r.processLogs(4, nil)
	r.fsmLock.Unlock()
	if got, n := applied(), len(r.fsmMutateCh); got != "[1 2]" || n != 1 {
		t.Fatalf("processLogs(4) while runFSM held the lock: applied %s with %d queued, want [1 2] and 1", got, n)
	}

	// runFSM free again but 3-4 not applied yet: 5-6 must queue behind
	// them, not be applied ahead of them.
	r.processLogs(6, nil)
	if got, n := applied(), len(r.fsmMutateCh); got != "[1 2]" || n != 2 {
		t.Fatalf("processLogs(6) with 3-4 still queued: applied %s with %d queued, want [1 2] and 2 (5-6 behind 3-4)", got, n)
	}

	go r.runFSM()
	defer close(r.shutdownCh)
	deadline := time.Now().Add(5 * time.Second)
	for r.fsmQueued.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("runFSM left %d requests unfinished after 5s", r.fsmQueued.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if got := applied(); got != "[1 2 3 4 5 6]" {
		t.Fatalf("after runFSM drained its queue: applied %s, want [1 2 3 4 5 6]", got)
	}

	// Queue drained: inline again.
	r.processLogs(8, nil)
	if got := applied(); got != "[1 2 3 4 5 6 7 8]" {
		t.Fatalf("after processLogs(8) with the queue drained: applied %s, want [1 ... 8] at once", got)
	}
}

// A snapshot taken by runFSM covers exactly the logs applied before it,
// whether the main loop or runFSM applied them.
func TestRingKVSnapshotAfterInlineApply(t *testing.T) {
	store := NewInmemStore()
	for i := uint64(1); i <= 3; i++ {
		if err := store.StoreLog(&Log{Index: i, Term: 2, Type: LogCommand, Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	fsm := &MockFSM{}
	r := &Raft{logs: store, fsm: fsm, fsmMutateCh: make(chan interface{}, 8),
		fsmSnapshotCh: make(chan *reqSnapshotFuture), shutdownCh: make(chan struct{})}
	r.conf.Store(Config{MaxAppendEntries: 256})
	r.fsmRunner = newFSMRunner(r)
	go r.runFSM()
	defer close(r.shutdownCh)

	r.processLogs(3, nil)
	req := &reqSnapshotFuture{}
	req.init()
	r.fsmSnapshotCh <- req
	if err := req.Error(); err != nil {
		t.Fatal(err)
	}
	defer req.snapshot.Release()
	if req.index != 3 || req.term != 2 {
		t.Fatalf("snapshot after an inline apply of 1-3 (term 2) at index %d, term %d; want 3, 2", req.index, req.term)
	}
	snap := req.snapshot.(*MockSnapshot)
	if len(snap.logs) != 3 || !bytes.Equal(snap.logs[2], []byte{3}) {
		t.Fatalf("snapshot holds %d logs, want the 3 applied", len(snap.logs))
	}
}
