package raftfsm

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is.
var (
	// ErrNotFound: Get found no such key in this partition.
	ErrNotFound = errors.New("raftfsm: key not found")

	// ErrClosed: the FSM was closed while WaitApplied was waiting; the replica
	// is shutting down, so retry the request on another replica or later.
	ErrClosed = errors.New("raftfsm: state machine closed")

	// ErrCorruptCommand: DecodeBatch was given bytes that are not a command
	// batch written by EncodeBatch (or by a newer, unknown format version).
	ErrCorruptCommand = errors.New("raftfsm: corrupt command")

	// ErrCorruptSnapshot: Restore was given a stream that is truncated, fails
	// its checksum, belongs to another partition or is not a raftfsm snapshot.
	// Fetch the snapshot again from the leader.
	ErrCorruptSnapshot = errors.New("raftfsm: corrupt snapshot")

	// ErrFailed: a storage error or a failed Restore left the FSM unable to
	// apply entries deterministically. It stops applying (rather than diverge
	// from the other replicas) until a Restore succeeds; rebuild this replica
	// from a leader snapshot or remove it.
	ErrFailed = errors.New("raftfsm: state machine failed; restore this replica from a snapshot")
)
