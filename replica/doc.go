// Package replica runs this node's member of one partition's Raft group:
// hashicorp/raft wired to the partition's state machine (package raftfsm), its
// log and stable store in the node's Pebble (package storage) and its share of
// the peer port (package transport).
//
// Guarantees:
//   - Propose returns results only for entries that are committed and
//     applied; a write whose fate is not known ends in ErrOutcomeUnknown and
//     may be retried with the same request id.
//   - ReadStrong is linearizable: only the leader answers, after a ReadIndex
//     round (barrier applied in its term, commit index noted, leadership
//     confirmed by a quorum, state machine caught up). A lease alone is never
//     trusted. See DESIGN.md.
//   - ReadEventual answers from local state at once, even without quorum; the
//     Read says the applied index and whether this replica leads.
//
// Duties of the caller: give each replica its own stream layer, call
// Bootstrap only with the same servers on every initial member, and Close the
// replica before closing the store.
//
// Example:
//
//	r, err := replica.Open(cfg)
//	if err != nil { ... }
//	defer r.Close()
//	res, index, err := r.Propose(ctx, []raftfsm.Command{{Kind: raftfsm.KindPut, Key: k, Value: v}})
//	rd, err := r.ReadStrong(ctx, k)
package replica
