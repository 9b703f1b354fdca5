package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Store is the node's one Pebble database, shared by every partition's Raft
// log, Raft stable store and FSM data. It is safe for concurrent use.
type Store struct {
	db    *pebble.DB
	pacer *syncPacer // paces WAL syncs; counts synced log writes

	// mu is held for reading by every operation and for writing by Close:
	// Pebble panics when used after Close, so Close must wait for operations
	// in flight and later ones must see closed and return ErrClosed.
	// Lock order: LogStore.mu before mu.
	mu     sync.RWMutex
	closed bool

	logsMu sync.Mutex
	logs   map[uint32]*LogStore // one handle per partition, so all callers share its cached bounds

	keyPool sync.Pool // of *[logKeyLen]byte, for GetLog
}

// Open opens (creating if needed) the Pebble store described by cfg.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := cfg.pebbleOptions(logger.With("component", "storage"))
	pacer := &syncPacer{fixed: cfg.WALMinSyncInterval, busy: cfg.WALBusySyncDelay}
	if pacer.fixed > 0 || pacer.busy > 0 {
		opts.WALMinSyncInterval = pacer.interval
	}
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: open pebble at %q: %w", cfg.Dir, err)
	}
	return &Store{
		db:      db,
		pacer:   pacer,
		logs:    make(map[uint32]*LogStore),
		keyPool: sync.Pool{New: func() any { return new([logKeyLen]byte) }},
	}, nil
}

// DB returns the underlying Pebble database, for the FSM (which owns the keys
// under FSMPrefix) and snapshots. Callers must stop using it, and close their
// iterators, batches and snapshots, before Close.
func (s *Store) DB() *pebble.DB { return s.db }

// Close waits for the operations in flight, then closes the database.
// Operations started afterwards return ErrClosed. Close is idempotent: later
// calls return nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close pebble: %w", err)
	}
	return nil
}

// acquire marks the start of an operation; pair it with release.
func (s *Store) acquire() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) release() { s.mu.RUnlock() }

// Log returns partition pid's Raft log and stable store. Every call for the
// same pid returns the same handle; it is cheap and never fails (operations
// on it report ErrClosed once the Store is closed).
func (s *Store) Log(pid uint32) *LogStore {
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	l, ok := s.logs[pid]
	if !ok {
		l = newLogStore(s, pid)
		s.logs[pid] = l
	}
	return l
}

// DeletePartition deletes every key of partition pid (Raft log, stable store
// and FSM data) with one synced range deletion. The space is reclaimed later
// by compactions. The caller must first stop the partition's Raft group and
// anything reading its FSM data.
func (s *Store) DeletePartition(pid uint32) error {
	s.logsMu.Lock()
	l := s.logs[pid]
	s.logsMu.Unlock()
	if l != nil {
		// Keep the handle's cached bounds in step with the deletion.
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	if l != nil {
		l.setBounds(0, 0) // before deleting, so the bounds never name a deleted entry
	}
	start := PartitionPrefix(pid)
	if err := s.db.DeleteRange(start, PrefixEnd(start), pebble.Sync); err != nil {
		if l != nil {
			l.loaded.Store(false) // reseek on next use
		}
		return fmt.Errorf("storage: delete partition %d: %w", pid, err)
	}
	return nil
}

// Partitions returns, in ascending order, the partitions that have at least
// one key (log, stable or FSM). It seeks from one partition to the next
// instead of scanning their keys.
func (s *Store) Partitions() ([]uint32, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.release()
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{spacePartition},
		UpperBound: []byte{spacePartition + 1},
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list partitions: %w", err)
	}
	var pids []uint32
	seek := make([]byte, partitionPrefixLen)
	seek[0] = spacePartition
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < partitionPrefixLen {
			ok = it.Next() // not written by this package; skip it
			continue
		}
		pid := binary.BigEndian.Uint32(k[1:])
		pids = append(pids, pid)
		if pid == math.MaxUint32 {
			break
		}
		binary.BigEndian.PutUint32(seek[1:], pid+1)
		ok = it.SeekGE(seek)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("storage: list partitions: %w", err)
	}
	return pids, nil
}

// GetMeta returns a copy of node metadata entry name, with ok false if it is
// not set.
func (s *Store) GetMeta(name string) (value []byte, ok bool, err error) {
	if err := s.acquire(); err != nil {
		return nil, false, err
	}
	defer s.release()
	v, closer, err := s.db.Get(metaKey(name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: get meta %q: %w", name, err)
	}
	value = append([]byte{}, v...)
	return value, true, closer.Close()
}

// SetMeta durably (synced) sets node metadata entry name to value.
func (s *Store) SetMeta(name string, value []byte) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	if err := s.db.Set(metaKey(name), value, pebble.Sync); err != nil {
		return fmt.Errorf("storage: set meta %q: %w", name, err)
	}
	return nil
}
