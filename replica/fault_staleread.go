//go:build jepsen_fault_staleread

package replica

// faultStaleReads makes ReadStrong answer from local state without the
// ReadIndex round: a deliberately broken build that the Jepsen suite must
// catch under partitions. Never set this tag in a production build.
const faultStaleReads = true
