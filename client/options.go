package client

import (
	"fmt"
	"strings"
)

// Consistency selects how a read is served.
type Consistency int

const (
	// Strong reads are linearizable: the partition's leader answers after
	// confirming its leadership with a quorum, so the read sees every write
	// acknowledged before it began. They fail while the partition has no
	// quorum.
	Strong Consistency = iota
	// Eventual reads are answered at once by any replica from its local
	// state, also while the partition has lost quorum. They may be stale;
	// the ReadReceipt says who answered and how far it had applied.
	Eventual
)

// String returns the name the API and kvctl use: "strong" or "eventual".
func (c Consistency) String() string {
	switch c {
	case Strong:
		return "strong"
	case Eventual:
		return "eventual"
	default:
		return fmt.Sprintf("Consistency(%d)", int(c))
	}
}

// ParseConsistency parses "strong" or "eventual" (case does not matter).
// Other names give an error wrapping ErrInvalidArgument that lists the valid
// ones.
func ParseConsistency(s string) (Consistency, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "strong":
		return Strong, nil
	case "eventual":
		return Eventual, nil
	}
	return Strong, newError(ErrInvalidArgument, nil, "unknown consistency %q: use strong or eventual", s)
}

type readOptions struct {
	consistency Consistency
}

// ReadOption changes how Get reads.
type ReadOption func(*readOptions)

// WithConsistency selects the read's consistency (default Strong).
func WithConsistency(c Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
}

// ReadReceipt says who answered a read, so that staleness is visible.
type ReadReceipt struct {
	// ServedBy is the name of the node that answered.
	ServedBy string
	// AppliedIndex is how far that node's replica had applied the
	// partition's log when it answered.
	AppliedIndex uint64
	// Leader is true when the answering node was the partition's leader.
	Leader bool
	// Partition is the key's partition.
	Partition uint32
}

// KV is a key, its value and version, and how it was read.
type KV struct {
	Key, Value []byte
	// Version is the Raft index of the key's last write.
	Version uint64
	Receipt ReadReceipt
}

type condKind int

const (
	condNone condKind = iota
	condValue
	condVersion
	condAbsent
)

// Condition is what the current state of a key must be for CompareAndSwap
// to swap. Build one with IfValue, IfVersion or IfAbsent; the zero value is
// rejected.
type Condition struct {
	kind    condKind
	value   []byte
	version uint64
}

// IfValue requires the key to exist with exactly this value.
func IfValue(v []byte) Condition { return Condition{kind: condValue, value: v} }

// IfVersion requires the key to exist at exactly this version.
func IfVersion(v uint64) Condition { return Condition{kind: condVersion, version: v} }

// IfAbsent requires the key not to exist (create-if-absent).
func IfAbsent() Condition { return Condition{kind: condAbsent} }

// String describes the condition for logs and messages.
func (c Condition) String() string {
	switch c.kind {
	case condValue:
		return fmt.Sprintf("value == %q", c.value)
	case condVersion:
		return fmt.Sprintf("version == %d", c.version)
	case condAbsent:
		return "absent"
	default:
		return "none"
	}
}

// CASResult is the answer to a CompareAndSwap that reached a decision.
type CASResult struct {
	// Succeeded is true when the condition held and the new value was written.
	Succeeded bool
	// Version is the key's new version when Succeeded.
	Version uint64
	// CurrentExists, CurrentValue and CurrentVersion describe the state that
	// did not match when !Succeeded.
	CurrentExists  bool
	CurrentValue   []byte
	CurrentVersion uint64
}
