package storage

import "errors"

// Sentinel errors. Test for them with errors.Is; returned errors wrap them
// with the partition, index or key involved.
var (
	// ErrKeyNotFound is returned by LogStore.Get and LogStore.GetUint64 for a
	// stable-store key that was never set. Its message is exactly "not found",
	// without the usual "storage: " prefix, and it is returned unwrapped:
	// hashicorp/raft (api.go HasExistingState, raft.go NewRaft and
	// requestVote) recognises a missing key by comparing err.Error() with
	// "not found", and treats any other error as fatal.
	ErrKeyNotFound = errors.New("not found")

	// ErrClosed is returned by every operation on a Store, or on a LogStore
	// from it, after Store.Close.
	ErrClosed = errors.New("storage: store closed")

	// ErrCorruptLog means a stored Raft log entry (or log key) could not be
	// decoded. The store's data is damaged; the replica should be rebuilt
	// from its peers (DeletePartition, then re-add it).
	ErrCorruptLog = errors.New("storage: corrupt log entry")

	// ErrCorruptValue means a stable-store value has the wrong shape, such as
	// a GetUint64 value that is not 8 bytes long.
	ErrCorruptValue = errors.New("storage: corrupt stable value")

	// ErrInvalidConfig is wrapped by every error from Config.Validate.
	ErrInvalidConfig = errors.New("storage: invalid config")
)
