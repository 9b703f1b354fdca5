package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// partitionDump returns the keys of one FSM's prefix.
func partitionDump(t *testing.T, f *FSM) []kv {
	t.Helper()
	var out []kv
	for _, e := range dump(t, f.db) {
		if bytes.HasPrefix(e.key, f.prefix) {
			out = append(out, e)
		}
	}
	return out
}

// snapshotBytes writes f's current snapshot to memory.
func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d bytes", n, err, buf.Len())
	}
	return buf.Bytes()
}

// populate applies n puts (plus dedup records of a few clients) to f, in
// entries of 500 commands starting at index from.
func populate(t *testing.T, f *FSM, from uint64, n int, valueLen int) uint64 {
	t.Helper()
	value := strings.Repeat("v", valueLen)
	index := from
	for start := 0; start < n; start += 500 {
		var cmds []Command
		for i := start; i < min(start+500, n); i++ {
			cmds = append(cmds, req(put(fmt.Sprintf("key-%06d", i), value), uint64(i%4), uint64(i), 0))
		}
		f.Apply(index, EncodeBatch(nil, cmds))
		index++
	}
	return index - 1
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		keys int
	}{
		{"empty partition", 0},
		{"one key", 1},
		{"keys and dedup records", 1200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFSM(t, openDB(t), 5)
			last := populate(t, src, 5, tt.keys, 20)
			last = max(last, 5)
			src.Apply(last+1, nil) // a snapshot index above dst's

			dstDB := openDB(t)
			neighbour := newFSM(t, dstDB, 6)
			applyOne(t, neighbour, 1, put("key-000000", "neighbour"))
			dst := newFSM(t, dstDB, 5)
			applyOne(t, dst, 1, put("stale-local-key", "x")) // must vanish
			neighbourBefore := partitionDump(t, neighbour)

			if err := dst.Restore(bytes.NewReader(snapshotBytes(t, src))); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if dst.AppliedIndex() != last+1 {
				t.Fatalf("AppliedIndex = %d, want %d", dst.AppliedIndex(), last+1)
			}
			if d := diffKeyspaces(partitionDump(t, src), partitionDump(t, dst)); d != "" {
				t.Fatalf("restored partition differs: %s", d)
			}
			if d := diffKeyspaces(neighbourBefore, partitionDump(t, neighbour)); d != "" {
				t.Fatalf("restore touched another partition: %s", d)
			}
			if got := newFSM(t, dstDB, 5).AppliedIndex(); got != last+1 {
				t.Fatalf("persisted applied index after restore = %d, want %d", got, last+1)
			}
		})
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	applyOne(t, f, 1, put("k", "old"))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	applyOne(t, f, 2, put("k", "new"))
	applyOne(t, f, 3, put("j", "new"))

	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	dst := newFSM(t, openDB(t), 1)
	if err := dst.Restore(&buf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	v, ver, err := dst.Get([]byte("k"))
	if snap.Index() != 1 || dst.AppliedIndex() != 1 || string(v) != "old" || ver != 1 {
		t.Fatalf("snapshot index %d, restored applied %d, k=%q@%d %v; want the state at index 1", snap.Index(), dst.AppliedIndex(), v, ver, err)
	}
	if _, _, err := dst.Get([]byte("j")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key written after the snapshot was restored: %v", err)
	}
	snap.Release()
	snap.Release() // idempotent
	if _, err := snap.WriteTo(io.Discard); err == nil {
		t.Fatalf("WriteTo after Release succeeded")
	}
}

func TestRestoreNotNewerKeepsLocalState(t *testing.T) {
	tests := []struct {
		name      string
		snapIndex uint64
	}{
		{"older snapshot", 3},
		{"same index", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFSM(t, openDB(t), 1)
			applyOne(t, src, tt.snapIndex, put("k", "from-snapshot"))
			dst := newFSM(t, openDB(t), 1)
			applyOne(t, dst, 10, put("k", "local"))
			before := partitionDump(t, dst)

			r := bytes.NewReader(snapshotBytes(t, src))
			if err := dst.Restore(r); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if r.Len() != 0 {
				t.Fatalf("Restore left %d bytes unread; it must drain the stream", r.Len())
			}
			if d := diffKeyspaces(before, partitionDump(t, dst)); d != "" || dst.AppliedIndex() != 10 {
				t.Fatalf("local state changed (applied %d): %s", dst.AppliedIndex(), d)
			}
		})
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	src := newFSM(t, openDB(t), 1)
	populate(t, src, 10, 20, 5) // above dst's applied index 1
	good := snapshotBytes(t, src)
	other := newFSM(t, openDB(t), 2)
	applyOne(t, other, 10, put("k", "v"))

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", flip(0)},
		{"unknown version", flip(len(snapshotMagic))},
		{"wrong partition", snapshotBytes(t, other)},
		{"flipped index", flip(headerLen - 1)},
		{"flipped record", flip(headerLen + 3)},
		{"flipped count", flip(len(good) - 5)},
		{"flipped checksum", flip(len(good) - 1)},
		{"truncated header", good[:headerLen-1]},
		{"truncated record", good[:headerLen+10]},
		{"truncated trailer", good[:len(good)-1]},
		{"huge key length", append(bytes.Clone(good[:headerLen]), 0xff, 0xff, 0xff, 0xff, 0x0f)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newFSM(t, openDB(t), 1)
			applyOne(t, dst, 1, put("local", "v"))
			before := partitionDump(t, dst)
			if err := dst.Restore(bytes.NewReader(tt.data)); !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("Restore = %v, want ErrCorruptSnapshot", err)
			}
			// Nothing was committed (the stream is below the batch size), so
			// the local state must be intact and the FSM still working.
			if d := diffKeyspaces(before, partitionDump(t, dst)); d != "" || dst.AppliedIndex() != 1 {
				t.Fatalf("failed restore changed local state (applied %d): %s", dst.AppliedIndex(), d)
			}
			if r := applyOne(t, dst, 2, put("k", "v")); r.Status != StatusOK {
				t.Fatalf("apply after failed restore: %+v", r)
			}
		})
	}
}

func TestRestoreRejectsEveryFlipAndTruncation(t *testing.T) {
	// Index 2: flipping the low bit of any index byte gives a larger index,
	// so no flip turns it into an old snapshot that Restore would skip.
	src := newFSM(t, openDB(t), 1)
	populate(t, src, 2, 8, 3)
	good := snapshotBytes(t, src)
	db := openDB(t)
	dst := newFSM(t, db, 1)
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		if err := dst.Restore(bytes.NewReader(b)); !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("byte %d flipped: Restore = %v, want ErrCorruptSnapshot", i, err)
		}
		if err := dst.Restore(bytes.NewReader(good[:i])); !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("truncated to %d bytes: Restore = %v, want ErrCorruptSnapshot", i, err)
		}
	}
	if dst.AppliedIndex() != 0 || len(dump(t, db)) != 0 {
		t.Fatalf("failed restores left state behind: applied %d", dst.AppliedIndex())
	}
}

func TestRestoreReaderError(t *testing.T) {
	src := newFSM(t, openDB(t), 1)
	populate(t, src, 1, 10, 5)
	good := snapshotBytes(t, src)
	boom := errors.New("connection reset")
	dst := newFSM(t, openDB(t), 1)
	err := dst.Restore(&failingReader{r: bytes.NewReader(good[:len(good)/2]), err: boom})
	if !errors.Is(err, boom) || errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("Restore = %v, want the reader's error, not ErrCorruptSnapshot", err)
	}
}

func TestRestoreFailureAfterCommitStopsApplying(t *testing.T) {
	src := newFSM(t, openDB(t), 1)
	populate(t, src, 1, 2000, 50)
	good := snapshotBytes(t, src)
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xff

	db := openDB(t)
	neighbour := newFSM(t, db, 2)
	applyOne(t, neighbour, 1, put("n", "v"))
	dst := newFSM(t, db, 1)
	dst.restoreSize = 16 << 10 // commit many batches before the trailer
	applyOne(t, dst, 1, put("local", "v"))

	if err := dst.Restore(bytes.NewReader(bad)); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("Restore = %v, want ErrCorruptSnapshot", err)
	}
	if dst.AppliedIndex() != 0 || len(partitionDump(t, dst)) != 0 {
		t.Fatalf("after a failed destructive restore: applied %d, %d keys; want an empty partition at 0",
			dst.AppliedIndex(), len(partitionDump(t, dst)))
	}
	if len(partitionDump(t, neighbour)) != 2 {
		t.Fatalf("failed restore touched another partition")
	}
	if rs := dst.Apply(50000, EncodeBatch(nil, []Command{put("k", "v")})); rs[0].Status != StatusInvalid {
		t.Fatalf("apply after failed restore: %+v, want StatusInvalid", rs)
	}
	if err := dst.WaitApplied(context.Background(), 1); !errors.Is(err, ErrFailed) {
		t.Fatalf("WaitApplied = %v, want ErrFailed", err)
	}
	if err := dst.Restore(bytes.NewReader(good)); err != nil {
		t.Fatalf("Restore of a good snapshot: %v", err)
	}
	if d := diffKeyspaces(partitionDump(t, src), partitionDump(t, dst)); d != "" {
		t.Fatalf("restored partition differs: %s", d)
	}
}

// recordingWriter remembers the largest single write and the write count.
type recordingWriter struct {
	w        io.Writer
	writes   int
	maxWrite int
}

func (r *recordingWriter) Write(p []byte) (int, error) {
	r.writes++
	r.maxWrite = max(r.maxWrite, len(p))
	return r.w.Write(p)
}

// TestSnapshotStreams moves a 20k-key partition through an io.Pipe: the
// writer must hand it over in small pieces while Restore consumes it in
// bounded batches, never holding the partition in one buffer.
func TestSnapshotStreams(t *testing.T) {
	src := newFSM(t, openDB(t), 4)
	last := populate(t, src, 1, 20000, 100)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()

	dst := newFSM(t, openDB(t), 4)
	dst.restoreSize = 256 << 10
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() {
		err := dst.Restore(pr)
		pr.CloseWithError(err)
		restored <- err
	}()
	rec := &recordingWriter{w: pw}
	n, err := snap.WriteTo(rec)
	pw.CloseWithError(err)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if err := <-restored; err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if n < 20000*100 || rec.maxWrite > ioBufferSize || rec.writes < int(n/ioBufferSize) {
		t.Fatalf("WriteTo wrote %d bytes in %d writes of at most %d; want >2 MB in writes of at most %d",
			n, rec.writes, rec.maxWrite, ioBufferSize)
	}
	if dst.AppliedIndex() != last {
		t.Fatalf("AppliedIndex = %d, want %d", dst.AppliedIndex(), last)
	}
	if d := diffKeyspaces(partitionDump(t, src), partitionDump(t, dst)); d != "" {
		t.Fatalf("restored partition differs: %s", d)
	}
}
