package raft

// Tests of the patch's fifth part (RINGKV.md): the slices that carry entries
// to the state machine and to followers are sized for their entries, not for
// MaxAppendEntries.

import "testing"

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
