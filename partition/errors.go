package partition

import "errors"

// Sentinel errors of this package. Errors returned by this package wrap one
// of these with %w; test for them with errors.Is.
var (
	// ErrInvalidPartitionCount is returned by NewRing when the partition count
	// is below 1 or above MaxPartitions.
	ErrInvalidPartitionCount = errors.New("partition: invalid partition count")
)
