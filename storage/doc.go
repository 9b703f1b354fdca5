// Package storage is the node's one Pebble store: every partition's Raft log,
// Raft stable store and FSM data live in it under per-partition prefixes, so
// that one write-ahead log group-commits the synced writes of all partitions.
//
// # Key layout
//
// The first byte of a key names its space; other packages rely on this
// layout through PartitionPrefix, FSMPrefix and PrefixEnd:
//
//	0x01 name                          node metadata (GetMeta, SetMeta)
//	0x02 pid(4, BE) 0x01 index(8, BE)  Raft log entry of partition pid
//	0x02 pid(4, BE) 0x02 key           Raft stable-store entry of pid
//	0x02 pid(4, BE) 0x03 ...           FSM data of pid, owned by raftfsm
//
// Big-endian integers make byte order numeric order, so a partition's keys
// are contiguous (PartitionPrefix), partitions sort by id, and a log's
// entries sort by index.
//
// # Guarantee
//
// A log entry StoreLogs returned nil for survives a crash (of the process or
// of the machine), as does every DeleteRange, Set, SetUint64, SetMeta and
// DeletePartition that returned nil: each is one Pebble batch committed with
// pebble.Sync, so it is atomic and durable. Concurrent synced commits, of any
// partition, share WAL syncs; no write is acknowledged before its sync.
// While recent syncs each covered at least 4 such commits on average,
// Config.WALBusySyncDelay (500 µs by default) holds the next sync back so it
// covers more of them (pacer.go): 7-16% less CPU per write under 64
// concurrent writers (docs/PERFORMANCE.md), and nothing for a lone writer,
// whose syncs are never held.
//
// Config.WALFillAhead (8 MiB by default) keeps each WAL file written with
// zeros, and synced, that far beyond the log's end (walfill.go), so that a
// synced log write overwrites blocks the file already has and its fdatasync
// need not journal a new file size: 94-114 instead of 146-189 us per sync on
// this project's ext4 machine, 9-13% off a sequential put's p50. Pebble
// reads the zeros as the log's end, as it reads a recycled WAL's old tail;
// the filler never writes below the end of a write the log has begun.
//
// Config.WALWriteBuffer (256 KiB by default) holds Pebble's WAL writes in
// memory until the next sync, close or overflow (walbuffer.go), so that the
// records written between two syncs reach the file in one system call
// (under 64 concurrent writers 1.4 instead of 2.5 write calls per put, for
// about 1% less CPU). A sync writes what waits before it syncs, so the
// guarantee above is unchanged; an unsynced commit may be lost to a process
// crash as to a machine crash, which is why FSM batches that skip the sync
// must be replayable (below).
//
// *LogStore implements raft.LogStore and raft.StableStore. GetLog returns
// raft.ErrLogNotFound for a missing index; Get and GetUint64 return
// ErrKeyNotFound, whose message is exactly "not found" as hashicorp/raft
// expects. FirstIndex and LastIndex are served from memory and never name an
// entry that is not yet readable or already deleted: the cached bounds grow
// after a write commits and shrink before a deletion does. The log may have
// gaps (raft leaves one after restoring a snapshot); the bounds are the true
// first and last stored entries all the same. A damaged entry yields an
// error wrapping ErrCorruptLog, never a panic.
//
// # Caller duties
//
//   - Open one Store per node directory and Close it last, after every Raft
//     group is shut down and every iterator, batch or snapshot taken from DB
//     is closed. Operations after Close return ErrClosed.
//   - Write through DB only under FSMPrefix of your own partition; the log
//     and stable keys belong to this package.
//   - FSM batches may skip the sync only if they carry their applied index,
//     because the synced log can replay them after a crash (DESIGN.md 3).
//   - Stop a partition's Raft group before DeletePartition.
package storage
