//go:build !jepsen_fault_staleread

package replica

// faultStaleReads is false in every real build. The Jepsen suite builds kvd
// with -tags jepsen_fault_staleread to prove its checker catches stale reads.
const faultStaleReads = false
