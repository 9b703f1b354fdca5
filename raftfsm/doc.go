// Package raftfsm is the deterministic state machine of one RingKV
// partition: it applies committed Raft entries (batches of put, delete and
// compare-and-swap commands) to the partition's keyspace in the node's
// Pebble, deduplicates retried requests, and streams and restores snapshots.
//
// # Guarantee
//
// Determinism: the FSM's only inputs are entries (index, command bytes); it
// reads no clock, randomness or network, and its own Pebble state. Replicas
// that apply the same entries hold byte-identical keyspaces and return the
// same Results, however the entries are grouped into ApplyBatch calls.
// Every key's version is the Raft index of its last write.
//
// Exactly once per request id: a command with ClientID != 0 is applied at
// most once per (ClientID, Seq); a retry returns the first Result. A client
// lets the FSM forget results by sending AckBelow (the Raft dissertation's
// client sessions, §6.3); a request older than what was forgotten gets
// StatusStaleRequest and has no effect. A client that never acknowledges
// keeps at most 1024 results (and about 1 MiB) per client; older ones are
// forgotten as if acknowledged. The records live in Pebble; the FSM also
// keeps the last 64 clients' records (each up to 4 KiB) in memory so a
// write need not read its client's record back, and drops that cache on any
// failure and on Restore.
//
// Whole states in Pebble: the applied index is written in the same Pebble
// batch as the writes and dedup records it covers, so what Pebble holds is
// always the state after some applied index. With Config.WriteBack above 0,
// applied writes first wait in memory (every read and later command sees
// them) and reach Pebble together, on Flush, at the size bound, and before
// Snapshot, Restore and Close complete (pending.go).
//
// # Caller's duties
//
//   - Apply only committed entries, in index order. The FSM skips entries
//     at or below its applied index (replays after a restart, since batches
//     are committed without fsync) but cannot detect a reordered or
//     uncommitted one.
//   - Keep the Raft log synced: it is what replays a batch lost in a crash,
//     and with WriteBack everything that still waited in memory.
//   - With WriteBack, schedule Flush (OnPending says when something starts
//     to wait), or pending writes reach Pebble only at the size bound.
//   - Call ApplyBatch, Restore and Snapshot from one goroutine in the order
//     Raft dictates; reads (Get, AppliedIndex, WaitApplied) may run anywhere.
//   - For a linearizable read, WaitApplied(readIndex) before Get.
//   - Enforce key and value size limits before proposing; the FSM accepts
//     any non-empty key.
//
// # Layout
//
// The FSM owns every key under the partition's FSM prefix (see storage):
// the applied index, user values (an 8-byte big-endian version, then the
// value) and one dedup record per client. Deleting the replica range-deletes
// that prefix.
//
// # Limitations
//
// Dedup records of clients that vanish are never removed: each costs a key
// (at most about 1 MiB, usually a few bytes) until the partition is deleted.
// Expiring them needs time, which must travel inside commands (for example
// a leader-stamped clock in a periodic expiry command) to stay deterministic;
// that is left for later work.
package raftfsm
