package transport

import "errors"

// Errors returned by this package. They are wrapped with the peer address and
// partition id; test for them with errors.Is.
var (
	// ErrUnknownPartition means the peer runs a mux but has no layer for the
	// partition: the replica was never created there, or it was removed.
	ErrUnknownPartition = errors.New("transport: peer does not host this partition (replica not created there yet, or removed)")

	// ErrWrongCluster means the peer belongs to another cluster (or has not
	// learned its cluster id yet). Check the join addresses and data dirs.
	ErrWrongCluster = errors.New("transport: peer belongs to a different cluster (check --join addresses and data dirs)")

	// ErrBadHeader means one side did not speak this protocol: a malformed
	// header, an unsupported version, or a reply that is no known status.
	ErrBadHeader = errors.New("transport: malformed or unsupported connection header (is the address a RingKV peer port of a compatible version?)")

	// ErrHandshakeTimeout means the handshake did not finish in time: the peer
	// is overloaded or unreachable, or its partition did not accept the
	// connection.
	ErrHandshakeTimeout = errors.New("transport: handshake timed out (peer overloaded, unreachable, or not accepting for this partition)")

	// ErrClosed means the Mux or Layer was closed.
	ErrClosed = errors.New("transport: closed")

	// ErrPartitionRegistered means Listen was called twice for one partition
	// without closing the first layer.
	ErrPartitionRegistered = errors.New("transport: partition already has a layer on this node (close the old one first)")
)
