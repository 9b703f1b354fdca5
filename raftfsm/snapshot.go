package raftfsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot stream format (integers big-endian unless marked uvarint):
//
//	header  = magic[8] version:byte partition:u32 appliedIndex:u64
//	record  = len(key):uvarint key len(value):uvarint value   (key without the FSM prefix)
//	end     = 0x00                                            (a zero key length)
//	trailer = count:u64 crc:u32
//
// crc is CRC-32C of every byte before it. Records come in key order and hold
// user keys and dedup records; the applied index travels in the header so
// Restore can write it last.
const (
	snapshotMagic   = "RKVFSMSN"
	snapshotVersion = 1
	headerLen       = len(snapshotMagic) + 1 + 4 + 8

	maxSnapshotKey   = 1 << 20
	maxSnapshotValue = 64 << 20
	ioBufferSize     = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot is a point-in-time view of one partition's FSM keyspace. It
// pins a Pebble snapshot (no copy); Release it when done.
type Snapshot struct {
	snap      *pebble.Snapshot
	partition uint32
	index     uint64
	prefix    []byte
	end       []byte
}

// Snapshot captures the partition at its applied index. It is cheap: it
// writes what waits in memory to Pebble, and the data is read later, by
// WriteTo, from the pinned Pebble snapshot. It fails with ErrFailed while
// the FSM has stopped applying (see ApplyBatch).
func (f *FSM) Snapshot() (*Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flushLocked(); err != nil {
		return nil, err
	}
	snap := f.db.NewSnapshot()
	// Read the index from the snapshot itself, so it describes exactly the
	// data the snapshot holds.
	idx, err := readApplied(snap, f.appliedK)
	if err != nil {
		snap.Close()
		return nil, err
	}
	return &Snapshot{snap: snap, partition: f.partition, index: idx, prefix: f.prefix, end: f.end}, nil
}

// Index returns the applied index the snapshot was taken at.
func (s *Snapshot) Index() uint64 { return s.index }

// Release frees the Pebble snapshot. It is safe to call more than once.
func (s *Snapshot) Release() {
	if s.snap != nil {
		s.snap.Close()
		s.snap = nil
	}
}

// WriteTo streams the snapshot to w, one key at a time through a small
// buffer, so memory use does not grow with the partition. It may be called
// concurrently with ApplyBatch.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if s.snap == nil {
		return 0, errors.New("raftfsm: WriteTo on a released snapshot")
	}
	cw := &countingWriter{w: w}
	sw := &crcWriter{w: bufio.NewWriterSize(cw, ioBufferSize), crc: crc32.New(castagnoli)}
	var hdr [headerLen]byte
	copy(hdr[:], snapshotMagic)
	hdr[len(snapshotMagic)] = snapshotVersion
	binary.BigEndian.PutUint32(hdr[len(snapshotMagic)+1:], s.partition)
	binary.BigEndian.PutUint64(hdr[len(snapshotMagic)+5:], s.index)
	sw.write(hdr[:])

	it, err := s.snap.NewIter(&pebble.IterOptions{LowerBound: s.prefix, UpperBound: s.end})
	if err != nil {
		return cw.n, fmt.Errorf("raftfsm: snapshot iterator: %w", err)
	}
	var count uint64
	for valid := it.First(); valid && sw.err == nil; valid = it.Next() {
		k := it.Key()[len(s.prefix):]
		if !validSuffix(k) {
			continue // the applied index: it is in the header
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return cw.n, fmt.Errorf("raftfsm: snapshot value: %w", err)
		}
		sw.uvarint(uint64(len(k)))
		sw.write(k)
		sw.uvarint(uint64(len(v)))
		sw.write(v)
		count++
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return cw.n, fmt.Errorf("raftfsm: snapshot iterator: %w", err)
	}
	sw.uvarint(0)
	var trailer [12]byte
	binary.BigEndian.PutUint64(trailer[:8], count)
	sw.write(trailer[:8])
	binary.BigEndian.PutUint32(trailer[8:], sw.crc.Sum32())
	sw.write(trailer[8:])
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	if sw.err != nil {
		return cw.n, fmt.Errorf("raftfsm: write snapshot: %w", sw.err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// crcWriter checksums what it writes and keeps the first error, so the
// record loop checks once per record.
type crcWriter struct {
	w       *bufio.Writer
	crc     hash.Hash32
	err     error
	scratch [binary.MaxVarintLen64]byte
}

func (c *crcWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	c.crc.Write(p)
	_, c.err = c.w.Write(p)
}

func (c *crcWriter) uvarint(v uint64) {
	c.write(binary.AppendUvarint(c.scratch[:0], v))
}

// Restore replaces the partition's state with a snapshot stream written by
// WriteTo.
//
// If the snapshot's index is not above AppliedIndex(), Restore keeps the
// local state, drains r and returns nil. That is safe because the FSM only
// ever applies committed entries, and committed entries are the same on
// every replica: local state at applied index A already contains the effect
// of every entry up to the snapshot's index S <= A, exactly as the snapshot
// does, plus later committed entries. This is what lets a persistent FSM
// skip the snapshot the Raft library restores at every start.
//
// Otherwise Restore deletes the partition's keyspace with one range
// deletion, streams the records in batches of about 4 MiB, verifies the
// trailer and writes the applied index last, in a synced batch. Before that
// last batch the stored applied index is absent, so a crash mid-restore
// leaves a partition that restarts from index 0 and is restored again.
//
// A truncated, corrupt or foreign stream returns an error wrapping
// ErrCorruptSnapshot. If it is detected before the first batch was committed,
// the local state is untouched; otherwise the FSM empties the partition, sets the applied index to 0 and stops applying
// (ErrFailed) until a Restore succeeds. Get may observe a partly restored
// partition while Restore runs.
func (f *FSM) Restore(r io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = nil // the snapshot's records replace them
	sr := &crcReader{r: bufio.NewReaderSize(r, ioBufferSize), crc: crc32.New(castagnoli)}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(sr, hdr[:]); err != nil {
		return sr.wrap(err, "header")
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a raftfsm snapshot (bad magic)", ErrCorruptSnapshot)
	}
	if v := hdr[len(snapshotMagic)]; v != snapshotVersion {
		return fmt.Errorf("%w: unknown format version %d", ErrCorruptSnapshot, v)
	}
	if p := binary.BigEndian.Uint32(hdr[len(snapshotMagic)+1:]); p != f.partition {
		return fmt.Errorf("%w: snapshot of partition %d, want %d", ErrCorruptSnapshot, p, f.partition)
	}
	index := binary.BigEndian.Uint64(hdr[len(snapshotMagic)+5:])
	if applied := f.applied.Load(); index <= applied && f.fault == nil {
		f.log.Info("raftfsm: snapshot not newer than local state; keeping local state",
			"snapshot_index", index, "applied_index", applied)
		if _, err := io.Copy(io.Discard, sr.r); err != nil {
			f.log.Warn("raftfsm: draining skipped snapshot", "err", err)
		}
		return nil
	}
	if f.fault == nil {
		// Write what waits in memory first, so that a restore that fails
		// before it commits leaves a whole local state behind. A fault
		// has already dropped it.
		if err := f.flushLocked(); err != nil {
			return err
		}
	}
	f.log.Info("raftfsm: restoring snapshot", "snapshot_index", index)
	count, cleared, err := f.restoreRecords(sr, index)
	if err != nil && !cleared {
		// Nothing was committed yet: the local state is intact.
		return err
	}
	if err != nil {
		f.applied.Store(0)
		f.persisted = 0
		f.setFault(fmt.Errorf("restore of snapshot %d: %w", index, err))
		if cerr := f.db.DeleteRange(f.prefix, f.end, pebble.Sync); cerr != nil {
			f.log.Error("raftfsm: clearing partition after failed restore", "err", cerr)
		}
		return err
	}
	f.stateMu.Lock()
	f.fault = nil
	f.stateMu.Unlock()
	f.applied.Store(index)
	f.persisted = index
	f.wake()
	f.log.Info("raftfsm: restored snapshot", "snapshot_index", index, "keys", count)
	return nil
}

// restoreRecords clears the keyspace and writes the records and the
// applied index. cleared reports whether a batch was committed (so the old
// state is gone). Errors wrap ErrCorruptSnapshot unless r or Pebble failed.
func (f *FSM) restoreRecords(sr *crcReader, index uint64) (count uint64, cleared bool, err error) {
	b := f.db.NewBatch()
	defer func() { b.Close() }()
	if err := b.DeleteRange(f.prefix, f.end, nil); err != nil {
		return 0, false, fmt.Errorf("raftfsm: restore: %w", err)
	}
	var key, val, prev []byte
	for {
		var klen uint64
		klen, err = binary.ReadUvarint(sr)
		if err != nil {
			return count, cleared, sr.wrap(err, "key length")
		}
		if klen == 0 {
			break
		}
		if klen > maxSnapshotKey {
			return count, cleared, fmt.Errorf("%w: key of %d bytes", ErrCorruptSnapshot, klen)
		}
		if key, err = sr.readN(key, klen); err != nil {
			return count, cleared, sr.wrap(err, "key")
		}
		if !validSuffix(key) || (count > 0 && bytes.Compare(key, prev) <= 0) {
			return count, cleared, fmt.Errorf("%w: record %d has an unexpected or out-of-order key", ErrCorruptSnapshot, count)
		}
		var vlen uint64
		vlen, err = binary.ReadUvarint(sr)
		if err != nil {
			return count, cleared, sr.wrap(err, "value length")
		}
		if vlen > maxSnapshotValue {
			return count, cleared, fmt.Errorf("%w: value of %d bytes", ErrCorruptSnapshot, vlen)
		}
		if val, err = sr.readN(val, vlen); err != nil {
			return count, cleared, sr.wrap(err, "value")
		}
		op := b.SetDeferred(len(f.prefix)+len(key), len(val))
		copy(op.Key, f.prefix)
		copy(op.Key[len(f.prefix):], key)
		copy(op.Value, val)
		if err = op.Finish(); err != nil {
			return count, cleared, fmt.Errorf("raftfsm: restore: %w", err)
		}
		prev = append(prev[:0], key...)
		count++
		if b.Len() >= f.restoreSize {
			cleared = true // even a failed commit may have reached the memtable
			if err = b.Commit(pebble.NoSync); err != nil {
				return count, cleared, fmt.Errorf("raftfsm: restore commit: %w", err)
			}
			b.Close()
			b = f.db.NewBatch()
		}
	}
	var trailer [12]byte
	if _, err := io.ReadFull(sr, trailer[:8]); err != nil {
		return count, cleared, sr.wrap(err, "trailer")
	}
	sum := sr.crc.Sum32()
	if _, err := io.ReadFull(sr, trailer[8:]); err != nil {
		return count, cleared, sr.wrap(err, "trailer")
	}
	if n := binary.BigEndian.Uint64(trailer[:8]); n != count {
		return count, cleared, fmt.Errorf("%w: trailer counts %d records, stream has %d", ErrCorruptSnapshot, n, count)
	}
	if got := binary.BigEndian.Uint32(trailer[8:]); got != sum {
		return count, cleared, fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], index)
	if err := b.Set(f.appliedK, idx[:], nil); err != nil {
		return count, cleared, fmt.Errorf("raftfsm: restore: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return count, true, fmt.Errorf("raftfsm: restore commit: %w", err)
	}
	return count, true, nil
}

// crcReader checksums what it reads. ioErr remembers a failure of the
// underlying reader, so wrap can tell a broken source from a bad stream.
type crcReader struct {
	r     *bufio.Reader
	crc   hash.Hash32
	ioErr error
	one   [1]byte
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	c.noteErr(err)
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err != nil {
		c.noteErr(err)
		return 0, err
	}
	c.one[0] = b
	c.crc.Write(c.one[:])
	return b, nil
}

func (c *crcReader) noteErr(err error) {
	if err != nil && err != io.EOF && c.ioErr == nil {
		c.ioErr = err
	}
}

// readN reads n bytes into buf, growing it as data arrives, so a corrupt
// length cannot make Restore allocate more than the stream really holds.
func (c *crcReader) readN(buf []byte, n uint64) ([]byte, error) {
	buf = buf[:0]
	for uint64(len(buf)) < n {
		chunk := min(n-uint64(len(buf)), ioBufferSize)
		start := len(buf)
		buf = slices.Grow(buf, int(chunk))[:start+int(chunk)]
		if _, err := io.ReadFull(c, buf[start:]); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// wrap classifies a read error: a failing source passes through, anything
// else (EOF, a malformed uvarint) means the stream is corrupt.
func (c *crcReader) wrap(err error, what string) error {
	if c.ioErr != nil {
		return fmt.Errorf("raftfsm: read snapshot %s: %w", what, c.ioErr)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated in %s", ErrCorruptSnapshot, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorruptSnapshot, what, err)
}
