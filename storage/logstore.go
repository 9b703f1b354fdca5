package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

var (
	_ raft.LogStore    = (*LogStore)(nil)
	_ raft.StableStore = (*LogStore)(nil)
)

// LogStore is one partition's Raft log store and stable store, living in the
// node's shared Pebble under the partition's prefix. Get one with Store.Log.
// It is safe for concurrent use; hashicorp/raft appends from its main loop
// while the snapshot goroutine truncates the front.
type LogStore struct {
	s   *Store
	pid uint32

	// logLo and logHi bound the partition's log keys (read-only).
	logLo, logHi []byte

	// mu serializes the writers of this partition's log (StoreLogs,
	// DeleteRange, DeletePartition) and the lazy bound load, so that the
	// cached bounds follow the committed state. Different partitions never
	// contend, and their synced commits share WAL syncs.
	mu sync.Mutex

	// loaded says bounds holds the log's first and last index (0, 0 when
	// empty). bounds is written under mu and read without it.
	loaded atomic.Bool
	bounds bounds
}

// bounds is a (first, last) pair that readers see consistently without a
// lock or an allocation: a seqlock, since its writers are already serialized
// by LogStore.mu. Without it a reader could see first > last while an empty
// log gets its first entries.
type bounds struct {
	seq         atomic.Uint64 // odd while a write is in progress
	first, last atomic.Uint64
}

func (b *bounds) load() (first, last uint64) {
	for {
		s := b.seq.Load()
		if s&1 == 0 {
			first, last = b.first.Load(), b.last.Load()
			if b.seq.Load() == s {
				return first, last
			}
		}
		runtime.Gosched()
	}
}

// store publishes a new pair. Callers serialize (LogStore.mu).
func (b *bounds) store(first, last uint64) {
	b.seq.Add(1)
	b.first.Store(first)
	b.last.Store(last)
	b.seq.Add(1)
}

func newLogStore(s *Store, pid uint32) *LogStore {
	lo := kindPrefix(pid, kindLog)
	return &LogStore{s: s, pid: pid, logLo: lo, logHi: PrefixEnd(lo)}
}

// Partition returns the partition id this handle serves.
func (l *LogStore) Partition() uint32 { return l.pid }

// FirstIndex returns the first index in the log, or 0 when it is empty.
func (l *LogStore) FirstIndex() (uint64, error) {
	if err := l.ensureLoaded(); err != nil {
		return 0, err
	}
	first, _ := l.bounds.load()
	return first, nil
}

// LastIndex returns the last index in the log, or 0 when it is empty.
func (l *LogStore) LastIndex() (uint64, error) {
	if err := l.ensureLoaded(); err != nil {
		return 0, err
	}
	_, last := l.bounds.load()
	return last, nil
}

// GetLog reads the entry at index into out. It returns raft.ErrLogNotFound
// if there is none, and an error wrapping ErrCorruptLog if it cannot be
// decoded.
func (l *LogStore) GetLog(index uint64, out *raft.Log) error {
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.release()
	// Pebble's Get makes its key argument escape; a pooled buffer saves an
	// allocation per read. Pebble may hold the key until closer.Close.
	key := l.s.keyPool.Get().(*[logKeyLen]byte)
	defer l.s.keyPool.Put(key)
	putLogKey(key[:], l.pid, index)
	v, closer, err := l.s.db.Get(key[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("storage: partition %d: get log %d: %w", l.pid, index, err)
	}
	err = decodeLog(v, index, out)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storage: partition %d: log %d: %w", l.pid, index, err)
	}
	return nil
}

// StoreLog stores one entry; see StoreLogs.
func (l *LogStore) StoreLog(log *raft.Log) error {
	return l.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores the entries in one synced Pebble batch: when it returns
// nil, all of them survive a crash; otherwise none or all of them may.
// Entries replace any stored at the same index.
func (l *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	size := 0
	for _, e := range logs {
		size += logKeyLen + encodedLogLen(e) + 16 // 16: batch record overhead, a generous estimate
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.release()

	b := l.s.db.NewBatchWithSize(size)
	defer b.Close()
	lo, hi := logs[0].Index, logs[0].Index
	for _, e := range logs {
		// Encode straight into the batch's buffer: no per-entry allocation.
		op := b.SetDeferred(logKeyLen, encodedLogLen(e))
		putLogKey(op.Key, l.pid, e.Index)
		encodeLog(op.Value, e)
		if err := op.Finish(); err != nil {
			return fmt.Errorf("storage: partition %d: store log %d: %w", l.pid, e.Index, err)
		}
		lo, hi = min(lo, e.Index), max(hi, e.Index)
	}
	l.s.pacer.committed()
	if err := b.Commit(pebble.Sync); err != nil {
		l.loaded.Store(false) // unknown whether the entries landed: reseek on next use
		return fmt.Errorf("storage: partition %d: store logs %d..%d: %w", l.pid, lo, hi, err)
	}
	if l.loaded.Load() {
		first, last := l.bounds.load()
		if first == 0 || lo < first {
			first = lo
		}
		l.setBounds(first, max(last, hi))
	}
	// Not loaded yet: the first reader seeks and finds these entries. Either
	// way the bounds grow only now that the entries are readable.
	return nil
}

// DeleteRange deletes the entries with min <= index <= max (none if
// min > max) with one synced range deletion.
func (l *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.release()

	start := make([]byte, logKeyLen)
	putLogKey(start, l.pid, min)
	end := l.logHi
	if max < math.MaxUint64 {
		end = make([]byte, logKeyLen)
		putLogKey(end, l.pid, max+1)
	}
	// Shrink the bounds before deleting (and grow them only after writing,
	// in StoreLogs), so that they never name an entry already gone.
	if err := l.shrinkBoundsLocked(min, max, start, end); err != nil {
		return err
	}
	if err := l.s.db.DeleteRange(start, end, pebble.Sync); err != nil {
		l.loaded.Store(false) // the bounds may be ahead of the data: reseek on next use
		return fmt.Errorf("storage: partition %d: delete logs %d..%d: %w", l.pid, min, max, err)
	}
	return nil
}

// shrinkBoundsLocked publishes the bounds the log will have once entries
// [min, max] (keys [start, end)) are deleted. The log may have gaps (raft
// allows them after a snapshot restore), so it seeks for the new first or
// last entry instead of assuming max+1 or min-1; entries outside the range
// are not affected by the deletion, so seeking before it gives the answer.
func (l *LogStore) shrinkBoundsLocked(min, max uint64, start, end []byte) error {
	if !l.loaded.Load() {
		return nil
	}
	first, last := l.bounds.load()
	switch {
	case first == 0 || max < first || min > last || (min > first && max < last):
		return nil // nothing, or only a middle stretch, goes
	case min <= first && max >= last:
		l.setBounds(0, 0)
		return nil
	}
	it, err := l.s.db.NewIter(&pebble.IterOptions{LowerBound: l.logLo, UpperBound: l.logHi})
	if err != nil {
		return fmt.Errorf("storage: partition %d: seek log bounds: %w", l.pid, err)
	}
	var ok bool
	var key []byte
	if min <= first { // the front goes; the entry after the range is the new first
		if it.SeekGE(end) {
			key = it.Key()
			first, ok = logKeyIndex(key)
		}
	} else { // the back goes; the entry before the range is the new last
		if it.SeekLT(start) {
			key = it.Key()
			last, ok = logKeyIndex(key)
		}
	}
	if !ok {
		err = fmt.Errorf("%w: malformed or missing log key %x inside the bounds", ErrCorruptLog, key)
	}
	if err := errors.Join(it.Error(), err, it.Close()); err != nil {
		l.loaded.Store(false)
		return fmt.Errorf("storage: partition %d: seek log bounds: %w", l.pid, err)
	}
	l.setBounds(first, last)
	return nil
}

// ensureLoaded loads the cached bounds on first use.
func (l *LogStore) ensureLoaded() error {
	if l.loaded.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loaded.Load() {
		return nil
	}
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.release()
	return l.loadLocked()
}

// loadLocked seeks for the first and last log keys and caches their
// indexes. Callers hold l.mu and have acquired the store.
func (l *LogStore) loadLocked() error {
	it, err := l.s.db.NewIter(&pebble.IterOptions{LowerBound: l.logLo, UpperBound: l.logHi})
	if err != nil {
		return fmt.Errorf("storage: partition %d: load log bounds: %w", l.pid, err)
	}
	var first, last uint64
	var bad []byte
	if it.First() {
		var ok bool
		if first, ok = logKeyIndex(it.Key()); !ok {
			bad = append(bad, it.Key()...)
		}
		it.Last()
		if last, ok = logKeyIndex(it.Key()); !ok {
			bad = append(bad, it.Key()...)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		l.loaded.Store(false)
		return fmt.Errorf("storage: partition %d: load log bounds: %w", l.pid, err)
	}
	if bad != nil {
		l.loaded.Store(false)
		return fmt.Errorf("storage: partition %d: %w: malformed log key %x", l.pid, ErrCorruptLog, bad)
	}
	l.setBounds(first, last)
	return nil
}

// setBounds publishes new bounds. Callers hold l.mu.
func (l *LogStore) setBounds(first, last uint64) {
	l.bounds.store(first, last)
	l.loaded.Store(true)
}

// Set durably (synced) sets stable-store key to val.
func (l *LogStore) Set(key, val []byte) error {
	if err := l.s.acquire(); err != nil {
		return err
	}
	defer l.s.release()
	if err := l.s.db.Set(stableKey(l.pid, key), val, pebble.Sync); err != nil {
		return fmt.Errorf("storage: partition %d: set %q: %w", l.pid, key, err)
	}
	return nil
}

// Get returns a copy of stable-store key's value, or ErrKeyNotFound
// (unwrapped, message "not found", as hashicorp/raft expects) if it is unset.
func (l *LogStore) Get(key []byte) ([]byte, error) {
	if err := l.s.acquire(); err != nil {
		return nil, err
	}
	defer l.s.release()
	v, closer, err := l.s.db.Get(stableKey(l.pid, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: partition %d: get %q: %w", l.pid, key, err)
	}
	out := append([]byte{}, v...)
	return out, closer.Close()
}

// SetUint64 durably (synced) sets stable-store key to val, 8 bytes big-endian.
func (l *LogStore) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], val)
	return l.Set(key, b[:])
}

// GetUint64 returns the value SetUint64 stored under key, or 0 and
// ErrKeyNotFound (unwrapped) if it is unset.
func (l *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("storage: partition %d: uint64 %q: %w: %d bytes", l.pid, key, ErrCorruptValue, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
