package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// stored reads key's stored value straight from Pebble, around the FSM.
func stored(t *testing.T, f *FSM, key string) (string, bool) {
	t.Helper()
	v, closer, err := f.db.Get(appendDataKey(nil, f.prefix, []byte(key)))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", false
	}
	if err != nil {
		t.Fatalf("Pebble Get(%q): %v", key, err)
	}
	defer closer.Close()
	return string(v[versionLen:]), true
}

func storedApplied(t *testing.T, f *FSM) uint64 {
	t.Helper()
	idx, err := readApplied(f.db, f.appliedK)
	if err != nil {
		t.Fatalf("readApplied: %v", err)
	}
	return idx
}

func TestWriteBackWaitsForFlush(t *testing.T) {
	db := openDB(t)
	cfg := DefaultConfig()
	cfg.DB, cfg.Partition, cfg.WriteBack = db, 2, 1<<20
	calls := 0
	cfg.OnPending = func() { calls++ }
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(f.Close)

	applyOne(t, f, 1, put("k", "v1"))
	applyOne(t, f, 2, req(put("k", "v2"), 7, 1, 0))
	if r := applyOne(t, f, 3, req(casValue("k", "v2", "v3"), 7, 2, 0)); r.Status != StatusOK {
		t.Fatalf("CAS against a pending value: %+v", r)
	}
	if calls != 1 {
		t.Fatalf("OnPending called %d times for three applies, want once", calls)
	}
	if v, ver, err := f.Get([]byte("k")); err != nil || string(v) != "v3" || ver != 3 {
		t.Fatalf("Get = %q@%d, %v; want the pending v3@3", v, ver, err)
	}
	if _, ok := stored(t, f, "k"); ok || storedApplied(t, f) != 0 {
		t.Fatalf("Pebble already holds the pending state (applied %d)", storedApplied(t, f))
	}
	if err := f.WaitApplied(context.Background(), 3); err != nil {
		t.Fatalf("WaitApplied(3): %v", err)
	}

	if err := f.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if v, ok := stored(t, f, "k"); !ok || v != "v3" || storedApplied(t, f) != 3 {
		t.Fatalf("after Flush Pebble holds %q (found %v), applied %d; want v3 at 3", v, ok, storedApplied(t, f))
	}
	// A retry after the flush reads the dedup record the flush wrote.
	f.sessions = nil
	if r := applyOne(t, f, 4, req(put("k", "again"), 7, 2, 0)); r.Status != StatusOK || r.Version != 3 {
		t.Fatalf("retry of seq 2 = %+v, want its first result OK@3", r)
	}
	applyOne(t, f, 5, del("k"))
	if calls != 2 {
		t.Fatalf("OnPending called %d times, want a second call after the flush", calls)
	}
	if _, _, err := f.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after a pending delete = %v, want ErrNotFound", err)
	}
	f.Close()
	if _, ok := stored(t, f, "k"); ok || storedApplied(t, f) != 5 {
		t.Fatalf("Close did not write the pending delete (applied %d)", storedApplied(t, f))
	}
	if err := f.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close = %v, want ErrClosed", err)
	}
}

func TestWriteBackFlushesAtItsLimit(t *testing.T) {
	db := openDB(t)
	f := newFSMWriteBack(t, db, 1, 1000)
	value := strings.Repeat("x", 400)
	applyOne(t, f, 1, put("a", value))
	if _, ok := stored(t, f, "a"); ok {
		t.Fatalf("a write under the limit reached Pebble")
	}
	applyOne(t, f, 2, put("b", value))
	applyOne(t, f, 3, put("c", value))
	for _, k := range []string{"a", "b", "c"} {
		if v, ok := stored(t, f, k); !ok || v != value {
			t.Fatalf("%q not in Pebble after the pending writes passed the limit", k)
		}
	}
	if storedApplied(t, f) != 3 {
		t.Fatalf("stored applied index = %d, want 3", storedApplied(t, f))
	}
	// Overwrites of one key count once.
	for i := uint64(4); i < 20; i++ {
		applyOne(t, f, i, put("a", "small"))
	}
	if storedApplied(t, f) != 3 {
		t.Fatalf("16 overwrites of one small value were flushed (applied %d)", storedApplied(t, f))
	}
}

func TestSnapshotWritesPendingFirst(t *testing.T) {
	db := openDB(t)
	f := newFSMWriteBack(t, db, 4, 1<<20)
	applyOne(t, f, 1, put("k", "v"))
	applyOne(t, f, 2, del("gone"))
	g := transfer(t, f, openDB(t), 4)
	if v, ver, err := g.Get([]byte("k")); err != nil || string(v) != "v" || ver != 1 {
		t.Fatalf("restored Get = %q@%d, %v; want v@1", v, ver, err)
	}
	if storedApplied(t, f) != 2 {
		t.Fatalf("Snapshot left the source's stored applied index at %d, want 2", storedApplied(t, f))
	}
}

func TestRestoreOverPendingState(t *testing.T) {
	src := newFSM(t, openDB(t), 5)
	applyOne(t, src, 1, put("k", "snap"))
	applyOne(t, src, 9, put("only-in-snapshot", "x"))
	snap := snapshotBytes(t, src)

	f := newFSMWriteBack(t, openDB(t), 5, 1<<20)
	applyOne(t, f, 1, put("k", "local"))
	applyOne(t, f, 2, put("local-only", "y"))
	if err := f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if v, _, err := f.Get([]byte("k")); err != nil || string(v) != "snap" {
		t.Fatalf("Get(k) after Restore = %q, %v; want the snapshot's value", v, err)
	}
	if _, _, err := f.Get([]byte("local-only")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a pending write survived Restore: %v", err)
	}
	if f.AppliedIndex() != 9 || storedApplied(t, f) != 9 {
		t.Fatalf("applied %d, stored %d; want 9", f.AppliedIndex(), storedApplied(t, f))
	}
}

// A storage failure in write-back mode drops every pending write, not only
// the failed batch's, and goes back to the state Pebble holds.
func TestWriteBackFailureGoesBackToStoredState(t *testing.T) {
	db := openDB(t)
	f := newFSMWriteBack(t, db, 1, 1<<20)
	applyOne(t, f, 1, put("k", "v"))
	if err := f.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	applyOne(t, f, 2, put("pending", "p"))
	if err := db.Set(appendDataKey(nil, f.prefix, []byte("bad")), []byte{1, 2}, nil); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	rs := f.ApplyBatch([]Entry{entry(3, put("other", "x")), entry(4, del("bad"))})
	for i, r := range rs {
		if len(r) != 1 || r[0].Status != StatusInvalid {
			t.Fatalf("entry %d results = %+v, want StatusInvalid", i, r)
		}
	}
	if f.AppliedIndex() != 1 {
		t.Fatalf("AppliedIndex = %d, want 1, the stored one", f.AppliedIndex())
	}
	for _, k := range []string{"pending", "other"} {
		if _, _, err := f.Get([]byte(k)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%q) after the failure = %v, want ErrNotFound", k, err)
		}
	}
	if err := f.Flush(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Flush after the failure = %v, want ErrFailed", err)
	}
}
