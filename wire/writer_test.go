package wire

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
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
// it: the first frame wakes the writer (or, direct, writes itself), and the
// other producers are queued behind it.
func TestBatchWriterLetsReadyFramesJoinTheWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			c := &countingConn{}
			w := newBatchWriter(c, 0, direct, func(err error) { t.Errorf("write failed: %v", err) })
			go w.run()

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
			<-w.exited

			writes, bytes := c.counts()
			if bytes != producers*frameLen {
				t.Fatalf("wrote %d bytes, want %d: frames lost or duplicated", bytes, producers*frameLen)
			}
			if writes > producers/4 {
				t.Fatalf("%d frames took %d writes, want at most %d: frames ready together must share writes", producers, writes, producers/4)
			}
		})
	}
}

// A direct writer's caller that finds nobody writing writes its frame
// itself, before queue returns: no goroutine is woken for it. Without
// direct, the frame waits for run.
func TestBatchWriterDirectCallerWritesItself(t *testing.T) {
	for _, direct := range []bool{false, true} {
		c := &countingConn{}
		w := newBatchWriter(c, 0, direct, func(err error) { t.Errorf("write failed: %v", err) })
		// run is not started: only the caller can write.
		if err := w.queue(func(b []byte) []byte { return append(b, "frame"...) }); err != nil {
			t.Fatalf("direct=%v: queue: %v", direct, err)
		}
		writes, bytes := c.counts()
		want := 0
		if direct {
			want = 1
		}
		if writes != want || bytes != 5*want {
			t.Fatalf("direct=%v: %d writes of %d bytes before run started, want %d", direct, writes, bytes, want)
		}
		go w.run()
		w.close(net.ErrClosed)
		<-w.exited
		if writes, bytes := c.counts(); writes != 1 || bytes != 5 {
			t.Fatalf("direct=%v: %d writes of %d bytes after close, want the frame written once", direct, writes, bytes)
		}
		if err := w.queue(func(b []byte) []byte { return b }); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("direct=%v: queue after close: %v, want net.ErrClosed", direct, err)
		}
	}
}

// failingConn fails every write; the first waits for release, after
// announcing itself on entered.
type failingConn struct {
	net.Conn
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (c *failingConn) Write([]byte) (int, error) {
	c.once.Do(func() {
		close(c.entered)
		<-c.release
	})
	return 0, errors.New("broken pipe")
}

// A failed write, by the caller or by run, breaks the writer: it is
// reported once, the frames queued during it are never written (nor
// tried), later frames are refused with the error, and run exits.
func TestBatchWriterWriteFailure(t *testing.T) {
	for _, direct := range []bool{false, true} {
		var mu sync.Mutex
		var failures []error
		c := &failingConn{entered: make(chan struct{}), release: make(chan struct{})}
		w := newBatchWriter(c, 0, direct, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, err)
		})
		go w.run()
		// The first frame's write hangs (written by this caller when
		// direct); a second frame queues behind it.
		first := make(chan error, 1)
		go func() { first <- w.queue(func(b []byte) []byte { return append(b, "frame"...) }) }()
		select {
		case <-c.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("direct=%v: the first frame was never written", direct)
		}
		if err := w.queue(func(b []byte) []byte { return append(b, "second"...) }); err != nil {
			t.Fatalf("direct=%v: queue during the write: %v", direct, err)
		}
		close(c.release)
		if err := <-first; err != nil {
			t.Fatalf("direct=%v: first queue: %v (the failure comes with the write)", direct, err)
		}
		select {
		case <-w.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("direct=%v: run did not exit after a failed write", direct)
		}
		mu.Lock()
		got := append([]error(nil), failures...)
		mu.Unlock()
		if len(got) != 1 || got[0].Error() != "broken pipe" {
			t.Fatalf("direct=%v: failures %v, want the write's error once (a broken writer must not try the queued frame)", direct, got)
		}
		if err := w.queue(func(b []byte) []byte { return b }); err == nil || err.Error() != "broken pipe" {
			t.Fatalf("direct=%v: queue after the failure: %v, want the write's error", direct, err)
		}
	}
}
