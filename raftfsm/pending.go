package raftfsm

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Write-back (Config.WriteBack above 0). Under load, a partition's Raft
// group applies about one small batch per write, and committing each to
// Pebble (the write, the client's dedup record and the applied index: three
// memtable inserts and a commit) was 15% of a loaded node's CPU. So applied
// writes wait in memory, newest per key, and reach Pebble together:
//
//   - Everything a batch applies becomes visible at once: Get, WaitApplied,
//     Snapshot and later commands see the pending writes, so no reader can
//     tell when they reach Pebble.
//   - A flush writes the pending values, the changed dedup records and the
//     applied index in one Pebble batch, so what Pebble holds is always the
//     whole state after some applied index. A crash loses at most what was
//     pending, and the synced Raft log replays it from that index, as it
//     replays an unsynced batch today.
//   - Snapshot and Restore flush first, so a snapshot never describes more
//     than Pebble holds and Raft never truncates log entries that a restart
//     would need; Close flushes too.
//   - A failure drops what was pending and goes back to what Pebble holds
//     (ApplyBatch's doc).

// pendingValue is a user key's newest write that waits in memory.
type pendingValue struct {
	value   []byte // never changed once stored: readers copy it without a lock
	version uint64
	deleted bool
}

// pendingOverhead approximates the memory of a pending write beyond its key
// and value, for Config.WriteBack.
const pendingOverhead = 64

// setPending records a write of userKey. Callers hold mu.
func (f *FSM) setPending(userKey []byte, pv pendingValue) {
	k := string(userKey)
	f.pendMu.Lock()
	old, ok := f.pending[k]
	f.pending[k] = pv
	f.pendMu.Unlock()
	if ok {
		f.pendBytes -= len(k) + len(old.value) + pendingOverhead
	}
	f.pendBytes += len(k) + len(pv.value) + pendingOverhead
}

// Flush writes what waits in memory to Pebble (see Config.WriteBack). It
// returns ErrClosed after Close and an error wrapping ErrFailed if the FSM
// has stopped applying, also when this write fails.
func (f *FSM) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shut {
		return ErrClosed
	}
	return f.flushLocked()
}

// flushLocked writes the pending state in one batch. On failure it drops
// it, stops the FSM and returns the fault. Callers hold mu.
func (f *FSM) flushLocked() error {
	if f.fault != nil {
		return f.fault
	}
	f.scheduled = false
	applied := f.applied.Load()
	if len(f.pending) == 0 && len(f.pendSess) == 0 && applied == f.persisted {
		return nil
	}
	if err := f.writePending(applied); err != nil {
		f.dropPending()
		f.setFault(err)
		return f.fault
	}
	f.pendMu.Lock()
	clear(f.pending)
	f.pendMu.Unlock()
	f.pendBytes = 0
	for _, s := range f.pendSess {
		s.dirty = false
	}
	clear(f.pendSess)
	f.persisted = applied
	return nil
}

// writePending commits the pending values in key order (neighbouring
// inserts are cheaper in Pebble's memtable), then the changed dedup records
// in client order, then the applied index, so every replica builds the same
// batch from the same state.
func (f *FSM) writePending(applied uint64) error {
	keys := make([]string, 0, len(f.pending))
	for k := range f.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b := f.db.NewBatch()
	defer b.Close()
	for _, k := range keys {
		pv := f.pending[k]
		f.keyBuf = append(append(append(f.keyBuf[:0], f.prefix...), tagData), k...)
		if pv.deleted {
			if err := b.Delete(f.keyBuf, nil); err != nil {
				return fmt.Errorf("raftfsm: delete: %w", err)
			}
			continue
		}
		op := b.SetDeferred(len(f.keyBuf), versionLen+len(pv.value))
		copy(op.Key, f.keyBuf)
		binary.BigEndian.PutUint64(op.Value, pv.version)
		copy(op.Value[versionLen:], pv.value)
		if err := op.Finish(); err != nil {
			return fmt.Errorf("raftfsm: write: %w", err)
		}
	}
	ids := make([]uint64, 0, len(f.pendSess))
	for id := range f.pendSess {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		f.keyBuf = appendSessionKey(f.keyBuf, f.prefix, id)
		f.valBuf = f.pendSess[id].appendTo(f.valBuf[:0])
		if err := b.Set(f.keyBuf, f.valBuf, nil); err != nil {
			return fmt.Errorf("raftfsm: write dedup record: %w", err)
		}
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], applied)
	if err := b.Set(f.appliedK, idx[:], nil); err != nil {
		return fmt.Errorf("raftfsm: write applied index: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("raftfsm: commit: %w", err)
	}
	return nil
}

// dropPending forgets the pending state after a failure and goes back to
// the applied index Pebble holds. The session cache goes too: it may hold
// changes that were never written. Callers hold mu.
func (f *FSM) dropPending() {
	f.pendMu.Lock()
	clear(f.pending)
	f.pendMu.Unlock()
	f.pendBytes = 0
	clear(f.pendSess)
	f.sessions = nil
	f.scheduled = false
	f.applied.Store(f.persisted)
}
