package node

import (
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"
)

// hangAfter bounds the whole package's tests below go test's -timeout, so a
// hang ends with a compact goroutine profile (identical stacks merged) that
// fits in the tail of a CI log, instead of go test's full dump of every
// idle Raft goroutine.
const hangAfter = 6 * time.Minute

func TestMain(m *testing.M) {
	t := time.AfterFunc(hangAfter, func() {
		fmt.Fprintf(os.Stderr, "node tests still running after %v; goroutines (merged):\n", hangAfter)
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		fmt.Fprintf(os.Stderr, "node tests hung for %v (profile above)\n", hangAfter)
		os.Exit(2)
	})
	code := m.Run()
	t.Stop()
	os.Exit(code)
}

// stopWithin stops n and fails the test, with the goroutines that are
// stuck, if that takes longer than within.
func stopWithin(t *testing.T, n *Node, within time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { n.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Errorf("stopping %s took longer than %v (goroutines above)", n.Name(), within)
		<-done
	}
}
