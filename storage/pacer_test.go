package storage

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The pacer holds syncs back only while syncs are shared by several log
// writes, always applies the fixed interval, and lets go again once the
// load is gone.
func TestSyncPacer(t *testing.T) {
	p := &syncPacer{busy: 500 * time.Microsecond}
	sync := func(commits int) time.Duration {
		for range commits {
			p.committed()
		}
		return p.interval()
	}
	for i := range 1000 {
		if d := sync(1); d != 0 {
			t.Fatalf("lone writer (one commit per sync), sync %d: held back %v", i, d)
		}
	}
	for i := range 1000 {
		if d := sync(2 + i%2); d != 0 {
			t.Fatalf("2-3 commits per sync, sync %d: held back %v", i, d)
		}
	}
	held := -1
	for i := range 100 {
		if sync(12) == p.busy {
			held = i
			break
		}
	}
	if held < 0 || held > 16 {
		t.Fatalf("12 commits per sync: first held back at sync %d, want within 16", held)
	}
	for range 100 {
		if d := sync(12); d != p.busy {
			t.Fatalf("under steady load: %v, want %v", d, p.busy)
		}
	}
	let := -1
	for i := range 100 {
		if sync(1) == 0 {
			let = i
			break
		}
	}
	if let < 0 || let > 32 {
		t.Fatalf("load gone: still held back after %d syncs", let)
	}
	// Syncs with no log commit at all (the FSM's, range deletions) count
	// toward the average as zero.
	if d := sync(0); d != 0 {
		t.Fatalf("a sync with no commits: %v", d)
	}

	fixed := &syncPacer{fixed: 300 * time.Microsecond, busy: 200 * time.Microsecond}
	if d := fixed.interval(); d != 300*time.Microsecond {
		t.Fatalf("fixed interval when idle: %v", d)
	}
	for range 50 {
		for range 20 {
			fixed.committed()
		}
		fixed.interval()
	}
	if d := fixed.interval(); d != 300*time.Microsecond {
		t.Fatalf("busy delay below the fixed interval: %v, want the fixed 300µs", d)
	}
	off := &syncPacer{}
	for range 50 {
		for range 20 {
			off.committed()
		}
		if d := off.interval(); d != 0 {
			t.Fatalf("pacing off: held back %v", d)
		}
	}
}

// Pebble consults the pacer after its WAL syncs, and every synced log
// write is counted.
func TestStorePacesItsWAL(t *testing.T) {
	cfg := TestConfig()
	cfg.WALBusySyncDelay = 500 * time.Microsecond
	s := openTest(t, cfg)
	logs := s.Log(3)
	for i := uint64(1); i <= 10; i++ {
		if err := logs.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: []byte("x")}}); err != nil {
			t.Fatal(err)
		}
	}
	if c, n := s.pacer.commits.Load(), s.pacer.syncs.Load(); c != 10 || n == 0 {
		t.Fatalf("after 10 synced log writes: pacer counted %d writes and %d syncs", c, n)
	}
}

// A batch counted as several groups' log writes counts as that many.
func TestCountSyncedLogWrites(t *testing.T) {
	s := openTest(t, TestConfig())
	s.CountSyncedLogWrites(7)
	s.CountSyncedLogWrites(0)
	s.CountSyncedLogWrites(-3)
	if c := s.pacer.commits.Load(); c != 7 {
		t.Fatalf("counted %d log writes, want 7 (zero and negative counts add nothing)", c)
	}
}
