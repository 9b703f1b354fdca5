package wire

import (
	"net"
	"runtime"
	"sync"
)

// keepBuffer is the largest write buffer kept between writes; one grown
// past it by a large frame is dropped.
const keepBuffer = 256 << 10

// batchWriter gathers the frames that callers queue while a write is in
// progress, or while the writer yields to goroutines ready to run, and sends
// them in one write: under load many answers (or requests) share a syscall,
// and an idle connection still sends each frame at once. One goroutine (run)
// does the writing.
type batchWriter struct {
	conn  net.Conn
	limit int // queue blocks while this many bytes wait; 0: never

	mu      sync.Mutex
	space   sync.Cond // signaled when queued empties or the writer closes
	queued  []byte
	err     error // set once no more frames are taken
	closing bool  // finish writing what is queued, then stop
	wake    chan struct{}
	exited  chan struct{}
}

// newBatchWriter returns a writer for c. With a positive limit, queue waits
// while limit bytes or more are queued: a peer that stops reading then
// stops the queueing goroutines rather than fill memory (the server uses
// this, so that MaxInFlight bounds what a connection can hold). Without one,
// queue never waits (the client, whose calls must end by their deadline).
func newBatchWriter(c net.Conn, limit int) *batchWriter {
	w := &batchWriter{conn: c, limit: limit, wake: make(chan struct{}, 1), exited: make(chan struct{})}
	w.space.L = &w.mu
	return w
}

// queue appends a frame built by build to the next write. It returns the
// writer's error once the connection has failed or is closing.
func (w *batchWriter) queue(build func([]byte) []byte) error {
	w.mu.Lock()
	for w.err == nil && w.limit > 0 && len(w.queued) >= w.limit {
		w.space.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.queued = build(w.queued)
	w.mu.Unlock()
	w.poke()
	return nil
}

func (w *batchWriter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes queued frames until close drains them or a write fails; a
// failed write is reported to onFail.
func (w *batchWriter) run(onFail func(error)) {
	defer close(w.exited)
	var out []byte
	for range w.wake {
		// Let the goroutines that are ready to run go first: on a busy
		// node they are mostly handlers about to queue their answers,
		// which then share this write. Woken at once instead, the writer
		// took about one frame per write under 64 clients. On an idle
		// node nothing else is ready and this returns at once.
		runtime.Gosched()
		for {
			w.mu.Lock()
			out, w.queued = w.queued, out[:0]
			closing := w.closing
			w.space.Broadcast()
			w.mu.Unlock()
			if len(out) == 0 {
				if closing {
					return
				}
				break
			}
			if _, err := w.conn.Write(out); err != nil {
				w.close(err)
				onFail(err)
				return
			}
			if cap(out) > keepBuffer {
				out = nil
			}
		}
	}
}

// close refuses further frames with err; run writes what is already queued
// and exits (at once if the connection is broken).
func (w *batchWriter) close(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.closing = true
	w.space.Broadcast()
	w.mu.Unlock()
	w.poke()
}
