package wire

import (
	"net"
	"runtime"
	"sync"
	"testing"
)

// countingConn is a net.Conn whose writes succeed at once and are counted.
type countingConn struct {
	net.Conn // nil: only Write is used

	mu     sync.Mutex
	writes int
	bytes  int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.bytes += len(p)
	return len(p), nil
}

func (c *countingConn) counts() (writes, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.bytes
}

// Frames queued by goroutines that are ready to run when the writer wakes
// share its write: the writer lets them run before it takes the buffer.
// Without that, on a busy node the writer woke for each frame alone and
// wrote it alone (about one answer per syscall under 64 clients). One
// processor makes the order of the goroutines deterministic enough to see
// it: the first frame wakes the writer, and the other producers are queued
// behind it.
func TestBatchWriterLetsReadyFramesJoinTheWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c := &countingConn{}
	w := newBatchWriter(c, 0)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		w.run(func(err error) { t.Errorf("write failed: %v", err) })
	}()

	const producers, frameLen = 32, 10
	var wg sync.WaitGroup
	for range producers {
		wg.Go(func() {
			if err := w.queue(func(b []byte) []byte { return append(b, make([]byte, frameLen)...) }); err != nil {
				t.Errorf("queue: %v", err)
			}
		})
	}
	wg.Wait()
	w.close(net.ErrClosed)
	<-exited

	writes, bytes := c.counts()
	if bytes != producers*frameLen {
		t.Fatalf("wrote %d bytes, want %d: frames lost or duplicated", bytes, producers*frameLen)
	}
	if writes > producers/4 {
		t.Fatalf("%d frames took %d writes, want at most %d: frames ready together must share writes", producers, writes, producers/4)
	}
}
