package storage

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Config configures a Store. A zero numeric field means "use the value from
// DefaultConfig"; a negative one is invalid.
type Config struct {
	// Dir is the Pebble directory (created if missing). Required.
	Dir string

	// FS is the filesystem. nil means vfs.Default (the OS); tests pass
	// vfs.NewMem() or vfs.NewCrashableMem().
	FS vfs.FS

	// Logger receives Pebble's log lines and a summary of its events:
	// flushes and compactions at Debug, write stalls, slow disk and low disk
	// space at Warn, background errors and corruption at Error. nil discards.
	Logger *slog.Logger

	// CacheSize is the block cache in bytes, shared by every partition.
	CacheSize int64

	// MemTableSize is the steady-state size of one memtable in bytes. Every
	// partition's log, stable store and FSM data share it, so it is sized
	// for the node, not for a partition.
	MemTableSize uint64

	// MemTableStopWritesThreshold is how many memtables may queue for
	// flushing before writes stop. More absorbs bursts at the cost of
	// memory; at least 2.
	MemTableStopWritesThreshold int

	// L0CompactionThreshold is the L0 read amplification (sublevels) that
	// triggers a compaction out of L0.
	L0CompactionThreshold int

	// L0StopWritesThreshold is the L0 read amplification at which writes
	// stop. A stall blocks the Raft log of every partition on the node at
	// once, so it is set well above Pebble's default of 12; it must be at
	// least L0CompactionThreshold.
	L0StopWritesThreshold int

	// MaxOpenFiles is a soft limit on the files Pebble keeps open.
	MaxOpenFiles int

	// WALMinSyncInterval delays each WAL sync by up to this long so that
	// more concurrent synced commits (of any partition) share one fsync.
	// 0 (the default) syncs at once; a few hundred microseconds trades
	// latency for throughput on slow disks. Must not be negative.
	WALMinSyncInterval time.Duration

	// WALBusySyncDelay delays each WAL sync by up to this long, but only
	// while the store is busy: while recent syncs each covered at least 4
	// synced log writes on average (many partitions writing at once). More
	// writes then share each fsync; a lone writer never waits (syncPacer).
	// 0 turns it off. Must not be negative.
	WALBusySyncDelay time.Duration

	// WALFillAhead keeps this many bytes of each write-ahead log file
	// written with zeros (and synced) beyond the log's end, so that the
	// log's synced writes overwrite instead of extending the file and their
	// fdatasync need not commit a new file size (walfill.go). 0 turns it
	// off. Must not be negative.
	WALFillAhead int64

	// WALWriteBuffer holds Pebble's WAL writes in memory, up to this many
	// bytes, until the next sync, so that the writes between two syncs
	// reach the file as one system call (walbuffer.go). Synced commits are
	// unaffected; an unsynced one may be lost to a kill -9, as to a power
	// loss. 0 turns it off. Must be between 0 and MaxWALWriteBuffer.
	WALWriteBuffer int
}

// MaxWALWriteBuffer bounds Config.WALWriteBuffer. A larger buffer would only
// delay the write of a large record, which bypasses the buffer anyway.
const MaxWALWriteBuffer = 16 << 20

// DefaultConfig returns the production settings, with Dir left empty.
func DefaultConfig() Config {
	return Config{
		CacheSize:                   128 << 20,
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       64,
		MaxOpenFiles:                1000,
		WALBusySyncDelay:            500 * time.Microsecond,
		WALFillAhead:                8 << 20,
		WALWriteBuffer:              256 << 10,
	}
}

// TestConfig returns a small, fast configuration on a fresh in-memory
// filesystem. Tests that need to simulate a crash set FS to
// vfs.NewCrashableMem() instead.
func TestConfig() Config {
	return Config{
		Dir:                         "ringkv-test",
		FS:                          vfs.NewMem(),
		CacheSize:                   1 << 20,
		MemTableSize:                1 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       2,
		L0StopWritesThreshold:       64,
		MaxOpenFiles:                100,
	}
}

// withDefaults returns c with zero fields taken from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.CacheSize == 0 {
		c.CacheSize = d.CacheSize
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = d.MemTableSize
	}
	if c.MemTableStopWritesThreshold == 0 {
		c.MemTableStopWritesThreshold = d.MemTableStopWritesThreshold
	}
	if c.L0CompactionThreshold == 0 {
		c.L0CompactionThreshold = d.L0CompactionThreshold
	}
	if c.L0StopWritesThreshold == 0 {
		c.L0StopWritesThreshold = d.L0StopWritesThreshold
	}
	if c.MaxOpenFiles == 0 {
		c.MaxOpenFiles = d.MaxOpenFiles
	}
	return c
}

// maxMemTableSize mirrors Pebble's limit (memtables are addressed with
// 32-bit offsets).
const maxMemTableSize = 4<<30 - 1

// Validate reports the first problem with c (after zero fields take their
// defaults) as an error wrapping ErrInvalidConfig. It has no side effects.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Dir == "":
		return fmt.Errorf("%w: Dir is empty; set it to the node's Pebble directory", ErrInvalidConfig)
	case c.CacheSize < 0:
		return fmt.Errorf("%w: CacheSize %d is negative", ErrInvalidConfig, c.CacheSize)
	case c.MemTableSize >= maxMemTableSize:
		return fmt.Errorf("%w: MemTableSize %d must be below 4 GiB", ErrInvalidConfig, c.MemTableSize)
	case c.MemTableStopWritesThreshold < 2:
		return fmt.Errorf("%w: MemTableStopWritesThreshold %d must be at least 2", ErrInvalidConfig, c.MemTableStopWritesThreshold)
	case c.L0CompactionThreshold < 1:
		return fmt.Errorf("%w: L0CompactionThreshold %d must be at least 1", ErrInvalidConfig, c.L0CompactionThreshold)
	case c.L0StopWritesThreshold < c.L0CompactionThreshold:
		return fmt.Errorf("%w: L0StopWritesThreshold %d must be at least L0CompactionThreshold %d",
			ErrInvalidConfig, c.L0StopWritesThreshold, c.L0CompactionThreshold)
	case c.MaxOpenFiles < 1:
		return fmt.Errorf("%w: MaxOpenFiles %d must be positive", ErrInvalidConfig, c.MaxOpenFiles)
	case c.WALMinSyncInterval < 0:
		return fmt.Errorf("%w: WALMinSyncInterval %v is negative", ErrInvalidConfig, c.WALMinSyncInterval)
	case c.WALBusySyncDelay < 0:
		return fmt.Errorf("%w: WALBusySyncDelay %v is negative", ErrInvalidConfig, c.WALBusySyncDelay)
	case c.WALFillAhead < 0:
		return fmt.Errorf("%w: WALFillAhead %d is negative", ErrInvalidConfig, c.WALFillAhead)
	case c.WALWriteBuffer < 0 || c.WALWriteBuffer > MaxWALWriteBuffer:
		return fmt.Errorf("%w: WALWriteBuffer %d must be between 0 (off) and %d bytes", ErrInvalidConfig, c.WALWriteBuffer, MaxWALWriteBuffer)
	}
	return nil
}

// pebbleOptions translates a validated, defaulted Config.
func (c Config) pebbleOptions(logger *slog.Logger) *pebble.Options {
	opts := &pebble.Options{
		FS:                          c.FS,
		CacheSize:                   c.CacheSize,
		MemTableSize:                c.MemTableSize,
		MemTableStopWritesThreshold: c.MemTableStopWritesThreshold,
		L0CompactionThreshold:       c.L0CompactionThreshold,
		L0StopWritesThreshold:       c.L0StopWritesThreshold,
		MaxOpenFiles:                c.MaxOpenFiles,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      pebbleLogger{logger},
		EventListener:               eventListener(logger),
	}
	if c.FS == nil {
		opts.FS = vfs.Default
	}
	if c.WALFillAhead > 0 {
		opts.FS = walFillFS{FS: opts.FS, ahead: c.WALFillAhead}
	}
	if c.WALWriteBuffer > 0 {
		opts.FS = walBufferFS{FS: opts.FS, limit: c.WALWriteBuffer}
	}
	return opts
}
