package storage

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

// heldWriteAtFile lets a test hold the filler inside its WriteAt.
type heldWriteAtFile struct {
	vfs.File
	entered chan int64    // receives the offset of each WriteAt
	release chan struct{} // each receive lets one WriteAt proceed
}

func (f *heldWriteAtFile) WriteAt(p []byte, off int64) (int, error) {
	f.entered <- off
	<-f.release
	return f.File.WriteAt(p, off)
}

func createTemp(t *testing.T, name string) (vfs.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	f, err := vfs.Default.Create(path, walCategory)
	if err != nil {
		t.Fatal(err)
	}
	return f, path
}

// closeAndRead closes w (which stops its filler) and returns the file's
// whole content.
func closeAndRead(t *testing.T, w vfs.File, path string) []byte {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func allZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

// A log write that reaches into the range the filler is writing must wait
// for it: otherwise the filler's zeros could land on the log. (A new file's
// filler starts walFillSlack beyond the log, so only a write that long
// reaches it.)
func TestWALFillWriteWaitsForTheFillItWouldOverlap(t *testing.T) {
	file, path := createTemp(t, "000001.log")
	held := &heldWriteAtFile{
		File:    file,
		entered: make(chan int64, 1),
		release: make(chan struct{}),
	}
	w := newWALFillFile(held, 0, 1<<20)
	if off := <-held.entered; off != walFillSlack {
		t.Fatalf("the first fill starts at %d, want %d: room for the log's first writes", off, walFillSlack)
	}
	data := bytes.Repeat([]byte("log!"), (walFillSlack+4096)/4) // reaches into the piece being filled
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("Write returned (%v) while the fill of its range was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	held.release <- struct{}{} // the first piece's zeros land
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// The fill continues beyond the log's end.
	if off := <-held.entered; off < int64(len(data)) {
		t.Fatalf("the next fill starts at %d, inside the log (%d bytes)", off, len(data))
	}
	close(held.release)
	got := closeAndRead(t, w, path)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the log's bytes were overwritten")
	}
	if !allZero(got[len(data):]) {
		t.Fatal("the fill beyond the log is not all zeros")
	}
}

// Under a stream of log writes of many sizes, the file holds exactly the log
// followed by zeros, and the filler keeps at least half of `ahead` zeros
// ahead of it (it refills to `ahead` once less than half is left).
func TestWALFillKeepsZerosAheadOfTheLog(t *testing.T) {
	const ahead = 1 << 20
	f, name := createTemp(t, "000002.log")
	w := newWALFillFile(f, 0, ahead)
	rng := rand.New(rand.NewPCG(1, 2))
	var log []byte
	for len(log) < 6<<20 {
		rec := make([]byte, 1+rng.IntN(64<<10))
		for i := range rec {
			rec[i] = byte(1 + rng.IntN(255)) // never zero, so a zero in the log means an overwrite
		}
		if _, err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		log = append(log, rec...)
		if rng.IntN(4) == 0 {
			if err := w.SyncData(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, func() bool {
		st, err := w.Stat()
		return err == nil && st.Size() >= int64(len(log))+ahead/2
	})
	got := closeAndRead(t, w, name)
	if !bytes.Equal(got[:len(log)], log) {
		i := 0
		for got[i] == log[i] {
			i++
		}
		t.Fatalf("the log differs from what was written at byte %d of %d", i, len(log))
	}
	if !allZero(got[len(log):]) {
		t.Fatal("the fill beyond the log is not all zeros")
	}
}

// A recycled WAL file is written up to its size already: the filler leaves
// that alone and fills beyond it.
func TestWALFillRecycledFileFillsBeyondItsSize(t *testing.T) {
	dir := t.TempDir()
	old := bytes.Repeat([]byte{0xee}, 300<<10)
	if err := os.WriteFile(filepath.Join(dir, "000003.log"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	fs := walFillFS{FS: vfs.Default, ahead: 1 << 20}
	f, err := fs.ReuseForWrite(filepath.Join(dir, "000003.log"), filepath.Join(dir, "000004.log"), walCategory)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a new log over an old one")
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		st, err := f.Stat()
		return err == nil && st.Size() >= int64(len(data))+1<<20
	})
	got := closeAndRead(t, f, filepath.Join(dir, "000004.log"))
	switch {
	case !bytes.Equal(got[:len(data)], data):
		t.Fatalf("the new log reads %q", got[:len(data)])
	case !bytes.Equal(got[len(data):len(old)], old[len(data):]):
		t.Fatal("the filler wrote inside the recycled file's old size")
	case !allZero(got[len(old):]):
		t.Fatal("the fill beyond the old size is not all zeros")
	}
}

// Only WAL files are filled: sstables, the manifest and the rest are not.
func TestWALFillOnlyWALs(t *testing.T) {
	fs := walFillFS{FS: vfs.Default, ahead: 1 << 20}
	f, err := fs.Create(filepath.Join(t.TempDir(), "000005.sst"), "pebble-sst")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.(*walFillFile); ok {
		t.Fatal("an sstable was created as a filled WAL file")
	}
}

// A store on disk with filled WALs comes back whole from a checkpoint taken
// while it runs, which replays the WAL files it copied, across memtable
// rotations and recycled WAL files whose tails are zeros.
func TestWALFillStoreRecoversFromACrashImage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.MemTableSize = 256 << 10 // rotate and recycle WAL files during the run
	cfg.WALFillAhead = 1 << 20
	s := openTest(t, cfg)
	const perPartition = 600
	for i := uint64(1); i <= perPartition; i += 20 {
		for pid := range uint32(4) {
			if err := s.Log(pid).StoreLogs(entries(pid, i, i+19, 200)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A checkpoint copies the WAL files whole (it does not flush the
	// memtable), so opening it replays them, zero tails included.
	image := filepath.Join(t.TempDir(), "image")
	if err := s.DB().Checkpoint(image); err != nil {
		t.Fatal(err)
	}
	names, err := os.ReadDir(image)
	if err != nil {
		t.Fatal(err)
	}
	var wals, filled int
	for _, e := range names {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		wals++
		b, err := os.ReadFile(filepath.Join(image, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= 512<<10 && allZero(b[len(b)-64<<10:]) {
			filled++
		}
	}
	if filled == 0 {
		// (The newest WAL's filler may not have run yet; the others' has.)
		t.Fatalf("none of the checkpoint's %d WAL files is filled ahead with zeros", wals)
	}

	cfg.Dir = image
	c := openTest(t, cfg)
	for pid := range uint32(4) {
		l := c.Log(pid)
		checkBounds(t, l, 1, perPartition)
		for i := uint64(1); i <= perPartition; i += 97 {
			var e raft.Log
			if err := l.GetLog(i, &e); err != nil || !sameLog(&e, entry(pid, i, 200)) {
				t.Fatalf("partition %d GetLog(%d) from the checkpoint = %+v, %v", pid, i, e, err)
			}
		}
	}
}
