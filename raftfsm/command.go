package raftfsm

import "strconv"

// Kind is the operation of a Command.
type Kind uint8

// Command kinds. Their numeric values are part of the on-disk log format.
const (
	KindPut    Kind = 1 // write Value under Key
	KindDelete Kind = 2 // remove Key
	KindCAS    Kind = 3 // write Value under Key if the Expect condition holds
)

// String returns the kind's name, for logs and test failures.
func (k Kind) String() string {
	switch k {
	case KindPut:
		return "put"
	case KindDelete:
		return "delete"
	case KindCAS:
		return "cas"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Expect is the condition of a compare-and-swap.
type Expect uint8

// CAS conditions. Their numeric values are part of the on-disk log format.
const (
	ExpectValue   Expect = 1 // the key exists and its value equals ExpectedValue
	ExpectVersion Expect = 2 // the key exists and its version equals ExpectedVersion
	ExpectAbsent  Expect = 3 // the key does not exist
)

// String returns the condition's name, for logs and test failures.
func (e Expect) String() string {
	switch e {
	case ExpectValue:
		return "value"
	case ExpectVersion:
		return "version"
	case ExpectAbsent:
		return "absent"
	}
	return "expect(" + strconv.Itoa(int(e)) + ")"
}

// Command is one client write. Fields a kind does not use are ignored by
// Apply (but still encoded, so a batch round-trips exactly).
type Command struct {
	Kind Kind
	Key  []byte
	// Value is the value a put writes, or the new value a successful CAS writes.
	Value []byte

	Expect          Expect // CAS only
	ExpectedValue   []byte // CAS with ExpectValue
	ExpectedVersion uint64 // CAS with ExpectVersion

	// ClientID and Seq identify the request for exactly-once application;
	// ClientID 0 disables deduplication. AckBelow tells the FSM that the client
	// has seen the results of all its requests with Seq < AckBelow, so their
	// dedup records may be dropped.
	ClientID, Seq, AckBelow uint64
}

// Status is the outcome of one command.
type Status uint8

// Command outcomes. Their numeric values are stored in dedup records.
const (
	// StatusOK: the write happened; Result.Version is its Raft index.
	StatusOK Status = iota
	// StatusNotFound: a delete of a key that does not exist; nothing written.
	StatusNotFound
	// StatusCompareFailed: a CAS condition did not hold; nothing written.
	// Result carries the key's current state.
	StatusCompareFailed
	// StatusInvalid: the entry could not be decoded or the command is invalid
	// (unknown kind or condition, empty key); Result.Err says what was wrong.
	StatusInvalid
	// StatusStaleRequest: Seq is below the client's dedup window. This is a
	// late duplicate whose result was already forgotten; it had no effect,
	// and the client cannot learn the original outcome from it.
	StatusStaleRequest
)

// String returns the status's name, for logs and test failures.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not-found"
	case StatusCompareFailed:
		return "compare-failed"
	case StatusInvalid:
		return "invalid"
	case StatusStaleRequest:
		return "stale-request"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Result is the outcome of one command. It is the same on every replica.
type Result struct {
	Status Status
	// Version is, for StatusOK, the Raft index of this write (the key's new
	// version); for StatusCompareFailed, the key's current version (0 if absent).
	Version uint64
	// Exists and Value are set for StatusCompareFailed: the key's current state.
	// Value is nil when the key is absent or its value is empty.
	Exists bool
	Value  []byte
	// Err says what was wrong, for StatusInvalid.
	Err string
}
