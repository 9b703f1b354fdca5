package storage

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// TestCrashKeepsAcknowledgedWrites simulates a machine crash with Pebble's
// crashable in-memory filesystem: the clone keeps everything synced and a
// random share of what was not. Whatever the share, every acknowledged write
// must be there after reopening, and nothing half-written may be visible;
// with WAL files filled with zeros ahead of the log (walfill.go) too, and
// with WAL writes held until the next sync (walbuffer.go).
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	percents := []int{0, 100}
	for range 4 {
		percents = append(percents, 1+rng.IntN(99))
	}
	for _, wal := range []struct {
		fill   int64
		buffer int
	}{{0, 0}, {64 << 10, 0}, {64 << 10, 8 << 10}} {
		for _, pct := range percents {
			t.Run(fmt.Sprintf("walfill=%d/walbuffer=%d/unsynced=%d%%", wal.fill, wal.buffer, pct), func(t *testing.T) {
				crashAndCheck(t, pct, wal.fill, wal.buffer, rand.New(rand.NewPCG(seed, uint64(pct))))
			})
		}
	}
}

const (
	crashWriters = 6  // partitions 0..5 append concurrently while the crash happens
	crashQuiet   = 10 // partition 10 is quiescent, with a truncated log
	crashGone    = 11 // partition 11 was deleted
)

func crashAndCheck(t *testing.T, pct int, walFill int64, walBuffer int, rng *rand.Rand) {
	fs := vfs.NewCrashableMem()
	cfg := TestConfig()
	cfg.FS = fs
	cfg.WALFillAhead = walFill
	cfg.WALWriteBuffer = walBuffer
	cfg.MemTableSize = 256 << 10 // flush during the run, so sstables are part of the crash too
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Quiescent state, all acknowledged before the crash.
	quiet := s.Log(crashQuiet)
	if err := quiet.StoreLogs(entries(crashQuiet, 1, 100, 100)); err != nil {
		t.Fatal(err)
	}
	if err := quiet.DeleteRange(1, 60); err != nil {
		t.Fatal(err)
	}
	if err := quiet.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	if err := quiet.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := quiet.Set([]byte("LastVoteCand"), []byte("n3")); err != nil {
		t.Fatal(err)
	}
	fill(t, s, crashGone)
	if err := s.DeletePartition(crashGone); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMeta("cluster-id", []byte("c-42")); err != nil {
		t.Fatal(err)
	}
	// Unsynced FSM writes may or may not survive, and must not break recovery.
	for i := range 200 {
		if err := s.DB().Set(append(FSMPrefix(crashQuiet), byte(i)), make([]byte, 512), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}

	// Writers keep appending while the crash happens. (They write nothing
	// else: another synced write after an append would sync it too and hide
	// an append that skipped its own sync.)
	var acked [crashWriters]atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for pid := range uint32(crashWriters) {
		wg.Go(func() {
			l := s.Log(pid)
			for next := uint64(1); ; {
				select {
				case <-stop:
					return
				default:
				}
				n := uint64(1 + int(pid)%4*8) // batches of 1, 9, 17, 25 entries
				if err := l.StoreLogs(entries(pid, next, next+n-1, 64+int(pid)*50)); err != nil {
					t.Errorf("partition %d StoreLogs: %v", pid, err)
					return
				}
				next += n
				acked[pid].Store(next - 1)
			}
		})
	}
	for pid := range crashWriters {
		waitFor(t, func() bool { return acked[pid].Load() >= 30 })
	}
	var ackedAtCrash [crashWriters]uint64
	for pid := range crashWriters {
		ackedAtCrash[pid] = acked[pid].Load()
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
	close(stop)
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.FS = crashed
	s = openTest(t, cfg)
	for pid := range uint32(crashWriters) {
		checkWriterAfterCrash(t, s.Log(pid), ackedAtCrash[pid])
	}
	q := s.Log(crashQuiet)
	checkBounds(t, q, 61, 90)
	for i := uint64(61); i <= 90; i++ {
		var e raft.Log
		if err := q.GetLog(i, &e); err != nil || !sameLog(&e, entry(crashQuiet, i, 100)) {
			t.Fatalf("quiet partition GetLog(%d) = %+v, %v", i, e, err)
		}
	}
	if v, err := q.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("quiet CurrentTerm = %d, %v; want 42", v, err)
	}
	if v, err := q.Get([]byte("LastVoteCand")); err != nil || string(v) != "n3" {
		t.Fatalf("quiet LastVoteCand = %q, %v; want n3", v, err)
	}
	checkBounds(t, s.Log(crashGone), 0, 0)
	if _, err := s.Log(crashGone).GetUint64([]byte("CurrentTerm")); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("deleted partition's term = %v, want ErrKeyNotFound", err)
	}
	if v, ok, err := s.GetMeta("cluster-id"); err != nil || !ok || string(v) != "c-42" {
		t.Fatalf("meta after crash = %q, %v, %v", v, ok, err)
	}
	pids, err := s.Partitions()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint([]uint32{0, 1, 2, 3, 4, 5, crashQuiet}); fmt.Sprint(pids) != want {
		t.Fatalf("Partitions() after crash = %v, want %s", pids, want)
	}
}

// checkWriterAfterCrash requires the acknowledged prefix 1..acked, and lets
// later (unacknowledged) entries exist only whole, contiguous and intact.
func checkWriterAfterCrash(t *testing.T, l *LogStore, acked uint64) {
	t.Helper()
	first, err := l.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := l.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || last < acked {
		t.Fatalf("partition %d bounds after crash = [%d, %d], acknowledged 1..%d", l.pid, first, last, acked)
	}
	size := 64 + int(l.pid)*50
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil || !sameLog(&e, entry(l.pid, i, size)) {
			t.Fatalf("partition %d GetLog(%d) after crash (acknowledged up to %d, last %d) = %+v, %v",
				l.pid, i, acked, last, e, err)
		}
	}
}

// TestCrashRightAfterEachWrite makes each kind of write the last one before
// a crash that keeps nothing unsynced, so a write that skipped its sync is
// caught (no later synced write can cover for it).
func TestCrashRightAfterEachWrite(t *testing.T) {
	tests := []struct {
		name  string
		write func(*Store) error
		check func(*testing.T, *Store)
	}{
		{"StoreLogs", func(s *Store) error { return s.Log(1).StoreLogs(entries(1, 11, 12, 8)) },
			func(t *testing.T, s *Store) { checkBounds(t, s.Log(1), 1, 12) }},
		{"StoreLog", func(s *Store) error { return s.Log(1).StoreLog(entry(1, 11, 8)) },
			func(t *testing.T, s *Store) { checkBounds(t, s.Log(1), 1, 11) }},
		{"DeleteRange front", func(s *Store) error { return s.Log(1).DeleteRange(1, 4) },
			func(t *testing.T, s *Store) { checkBounds(t, s.Log(1), 5, 10) }},
		{"DeleteRange back", func(s *Store) error { return s.Log(1).DeleteRange(7, 10) },
			func(t *testing.T, s *Store) { checkBounds(t, s.Log(1), 1, 6) }},
		{"Set", func(s *Store) error { return s.Log(1).Set([]byte("LastVoteCand"), []byte("n9")) },
			func(t *testing.T, s *Store) {
				if v, err := s.Log(1).Get([]byte("LastVoteCand")); err != nil || string(v) != "n9" {
					t.Fatalf("Get = %q, %v", v, err)
				}
			}},
		{"SetUint64", func(s *Store) error { return s.Log(1).SetUint64([]byte("CurrentTerm"), 9) },
			func(t *testing.T, s *Store) {
				if v, err := s.Log(1).GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
					t.Fatalf("GetUint64 = %d, %v", v, err)
				}
			}},
		{"SetMeta", func(s *Store) error { return s.SetMeta("node-id", []byte("n1")) },
			func(t *testing.T, s *Store) {
				if v, ok, err := s.GetMeta("node-id"); err != nil || !ok || string(v) != "n1" {
					t.Fatalf("GetMeta = %q, %v, %v", v, ok, err)
				}
			}},
		{"DeletePartition", func(s *Store) error { return s.DeletePartition(1) },
			func(t *testing.T, s *Store) {
				checkBounds(t, s.Log(1), 0, 0)
				if pids, err := s.Partitions(); err != nil || len(pids) != 0 {
					t.Fatalf("Partitions() = %v, %v; want none", pids, err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			cfg := TestConfig()
			cfg.FS = fs
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Log(1).StoreLogs(entries(1, 1, 10, 8)); err != nil {
				t.Fatal(err)
			}
			if err := tt.write(s); err != nil {
				t.Fatal(err)
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			cfg.FS = crashed
			tt.check(t, openTest(t, cfg))
		})
	}
}
