package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// countingFile counts the writes that reach a file; failing makes them fail.
type countingFile struct {
	vfs.File
	writes  *atomic.Int64
	syncs   *atomic.Int64
	failing *atomic.Bool
}

var errWriteFailed = errors.New("write failed (test)")

func (f *countingFile) Write(p []byte) (int, error) {
	if f.failing != nil && f.failing.Load() {
		return 0, errWriteFailed
	}
	f.writes.Add(1)
	return f.File.Write(p)
}

func (f *countingFile) SyncData() error {
	f.syncs.Add(1)
	return f.File.SyncData()
}

// countingFS counts the writes and syncs that reach its WAL files.
type countingFS struct {
	vfs.FS
	walWrites, walSyncs *atomic.Int64
}

func (fs countingFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return &countingFile{File: f, writes: fs.walWrites, syncs: fs.walSyncs}, nil
}

func (fs countingFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return &countingFile{File: f, writes: fs.walWrites, syncs: fs.walSyncs}, nil
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Writes wait in memory until a sync, and then reach the file as one write,
// in order; Close writes what waits.
func TestWALBufferHoldsWritesUntilSync(t *testing.T) {
	file, path := createTemp(t, "000002.log")
	var writes, syncs atomic.Int64
	inner := &countingFile{File: file, writes: &writes, syncs: &syncs}
	w := &walBufferFile{File: inner, limit: 1 << 10}
	for _, p := range []string{"aaa", "bbb", "ccc"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if size := fileSize(t, path); size != 0 || writes.Load() != 0 {
		t.Fatalf("before a sync the file holds %d bytes after %d writes; want nothing written yet", size, writes.Load())
	}
	if err := w.SyncData(); err != nil {
		t.Fatal(err)
	}
	if writes.Load() != 1 || syncs.Load() != 1 {
		t.Fatalf("a sync made %d writes and %d syncs of the file, want 1 and 1", writes.Load(), syncs.Load())
	}
	if got, _ := os.ReadFile(path); string(got) != "aaabbbccc" {
		t.Fatalf("after the sync the file holds %q", got)
	}
	if err := w.SyncData(); err != nil || writes.Load() != 1 {
		t.Fatalf("a sync with nothing waiting: %v, %d writes in all; want no new write", err, writes.Load())
	}

	if _, err := w.Write([]byte("ddd")); err != nil {
		t.Fatal(err)
	}
	if st, err := w.Stat(); err != nil || st.Size() != 12 {
		t.Fatalf("Stat() = %v, %v; want the size Pebble wrote, 12", st, err)
	}
	if _, err := w.Write([]byte("eee")); err != nil {
		t.Fatal(err)
	}
	if got := closeAndRead(t, w, path); string(got) != "aaabbbcccdddeee" {
		t.Fatalf("after Close the file holds %q", got)
	}
}

// Past its limit the buffer writes what waits first, and a write larger
// than the limit goes straight to the file after it: the order is Pebble's.
func TestWALBufferWritesInOrderPastItsLimit(t *testing.T) {
	file, path := createTemp(t, "000003.log")
	var writes, syncs atomic.Int64
	w := &walBufferFile{File: &countingFile{File: file, writes: &writes, syncs: &syncs}, limit: 10}
	var want []byte
	for i, p := range [][]byte{
		bytes.Repeat([]byte("1"), 6),
		bytes.Repeat([]byte("2"), 4),  // fits exactly: 10 wait
		bytes.Repeat([]byte("3"), 6),  // does not: the 10 are written, 6 wait
		bytes.Repeat([]byte("4"), 25), // larger than the limit: the 6, then these
		bytes.Repeat([]byte("5"), 3),
	} {
		if _, err := w.Write(p); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want = append(want, p...)
	}
	if got := writes.Load(); got != 3 {
		t.Fatalf("%d writes reached the file before the sync, want 3 (10 bytes, 6 bytes, 25 bytes)", got)
	}
	if err := w.SyncData(); err != nil {
		t.Fatal(err)
	}
	if got := closeAndRead(t, w, path); !bytes.Equal(got, want) {
		t.Fatalf("file holds %q, want %q", got, want)
	}
}

// A write that fails loses what waited, so every later call must fail too:
// going on would leave a hole in the log.
func TestWALBufferFailedWriteSticks(t *testing.T) {
	file, _ := createTemp(t, "000004.log")
	var writes, syncs atomic.Int64
	var failing atomic.Bool
	inner := &countingFile{File: file, writes: &writes, syncs: &syncs, failing: &failing}
	w := &walBufferFile{File: inner, limit: 1 << 10}
	if _, err := w.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	if err := w.SyncData(); !errors.Is(err, errWriteFailed) {
		t.Fatalf("SyncData = %v, want the write's error", err)
	}
	if syncs.Load() != 0 {
		t.Fatal("the file was synced after its write failed: a caller could take the lost bytes for durable")
	}
	failing.Store(false)
	if _, err := w.Write([]byte("next")); !errors.Is(err, errWriteFailed) {
		t.Fatalf("Write after a failed one = %v, want the first error", err)
	}
	if err := w.SyncData(); !errors.Is(err, errWriteFailed) {
		t.Fatalf("SyncData after a failed write = %v, want the first error", err)
	}
	if err := w.Close(); !errors.Is(err, errWriteFailed) {
		t.Fatalf("Close after a failed write = %v, want the first error", err)
	}
}

// In a store under concurrent synced commits, whose WAL syncs are held back
// (as the sync pacer does under load), Pebble's flusher writes each commit
// as it comes; with the buffer every write reaches the file only with a
// sync, so there are never more writes than syncs. Unsynced commits ride
// along. Everything is there after a reopen.
func TestWALBufferAtMostOneWritePerSyncInAStore(t *testing.T) {
	var walWrites, walSyncs atomic.Int64
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.FS = countingFS{FS: vfs.Default, walWrites: &walWrites, walSyncs: &walSyncs}
	cfg.WALFillAhead = 0 // its filler syncs too; count only the log's
	cfg.WALMinSyncInterval = 2 * time.Millisecond
	cfg.WALWriteBuffer = 64 << 10
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writes0, syncs0 := walWrites.Load(), walSyncs.Load()
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				opts := pebble.Sync
				if i%2 == 1 {
					opts = pebble.NoSync
				}
				if err := s.db.Set(fmt.Appendf(nil, "w%d-%03d", w, i), []byte("value"), opts); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The last commit of each writer was unsynced; one more synced commit
	// writes them.
	if err := s.db.Set([]byte("last"), []byte("synced"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	writes, syncs := walWrites.Load()-writes0, walSyncs.Load()-syncs0
	t.Logf("%d commits: %d WAL writes, %d WAL syncs", writers*each+1, writes, syncs)
	if writes > syncs || writes == 0 {
		t.Fatalf("%d writes reached the WAL for %d syncs; want at least one and at most one per sync", writes, syncs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, cfg)
	for w := range writers {
		for i := range each {
			k := fmt.Appendf(nil, "w%d-%03d", w, i)
			v, closer, err := s.db.Get(k)
			if err != nil || string(v) != "value" {
				t.Fatalf("%s after reopen: %q, %v", k, v, err)
			}
			closer.Close()
		}
	}
}
