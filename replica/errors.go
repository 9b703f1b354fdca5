package replica

import (
	"errors"
	"fmt"
)

// Errors returned by a Replica. Library errors (raft.ErrNotLeader and friends)
// are translated into these at this package's boundary.
var (
	// ErrNotLeader: this replica is not the partition's leader. The error is a
	// *NotLeaderError that names the leader when one is known.
	ErrNotLeader = errors.New("replica: not leader")
	// ErrNoLeader: the partition has no known leader right now (an election is
	// running, or quorum is lost). Retry later or elsewhere.
	ErrNoLeader = errors.New("replica: no leader for this partition (election in progress or quorum lost)")
	// ErrOutcomeUnknown: a write was proposed but leadership was lost or the
	// caller's context ended before it was known to be committed. It may or
	// may not be applied; retrying with the same request id is safe.
	ErrOutcomeUnknown = errors.New("replica: outcome of the write is unknown")
	// ErrClosed: the replica has been shut down.
	ErrClosed = errors.New("replica: closed")
	// ErrBootstrapped: Bootstrap was called on a replica that already has Raft state.
	ErrBootstrapped = errors.New("replica: already has Raft state; not bootstrapping again")
)

// NotLeaderError says which node leads the partition, when known.
type NotLeaderError struct {
	Partition  uint32
	LeaderID   string // empty when unknown
	LeaderAddr string // peer address of the leader
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("not leader for partition %d; no leader known", e.Partition)
	}
	return fmt.Sprintf("not leader for partition %d; leader is %s", e.Partition, e.LeaderID)
}

// Is makes errors.Is(err, ErrNotLeader) true, and ErrNoLeader when no leader is known.
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNotLeader || (target == ErrNoLeader && e.LeaderID == "")
}
