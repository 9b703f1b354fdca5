package wire

import (
	"net"
	"sync"
)

// keepBuffer is the largest write buffer kept between writes; one grown
// past it by a large frame is dropped.
const keepBuffer = 256 << 10

// batchWriter gathers the frames that callers queue while a write is in
// progress and sends them in one write: under load many answers (or
// requests) share a syscall, and an idle connection still sends each frame at
// once. One goroutine (run) does the writing.
type batchWriter struct {
	conn net.Conn

	mu      sync.Mutex
	queued  []byte
	err     error // set once no more frames are taken
	closing bool  // finish writing what is queued, then stop
	wake    chan struct{}
	exited  chan struct{}
}

func newBatchWriter(c net.Conn) *batchWriter {
	return &batchWriter{conn: c, wake: make(chan struct{}, 1), exited: make(chan struct{})}
}

// queue appends a frame built by build to the next write. It returns the
// writer's error once the connection has failed or is closing.
func (w *batchWriter) queue(build func([]byte) []byte) error {
	w.mu.Lock()
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
		for {
			w.mu.Lock()
			out, w.queued = w.queued, out[:0]
			closing := w.closing
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
	w.mu.Unlock()
	w.poke()
}
