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
// and an idle connection still sends each frame at once.
//
// One goroutine at a time writes: whoever holds writing. Normally that is
// run's goroutine, woken by queue. A direct writer (the server's) lets the
// caller of queue that finds nobody writing write itself, which saves a
// goroutine hand-off per answer on an idle connection; whatever others queue
// meanwhile goes in its next write, so under load answers still share
// writes. The client's calls never write themselves: they must be able to
// return at their deadline, and a write to a peer that stopped reading
// blocks.
type batchWriter struct {
	conn   net.Conn
	limit  int  // queue blocks while this many bytes wait; 0: never
	direct bool // callers of queue write themselves when nobody is writing
	onFail func(error)

	mu      sync.Mutex
	space   sync.Cond // signaled when queued empties or the writer closes
	queued  []byte
	spare   []byte // the last write's buffer, for the next queue
	writing bool   // a goroutine is writing; it takes what is queued meanwhile
	err     error  // set once no more frames are taken
	closing bool   // finish writing what is queued, then stop
	broken  bool   // a write failed
	wake    chan struct{}
	exited  chan struct{}
}

// newBatchWriter returns a writer for c; a failed write is reported to
// onFail. With a positive limit, queue waits while limit bytes or more are
// queued: a peer that stops reading then stops the queueing goroutines
// rather than fill memory (the server uses this, so that MaxInFlight bounds
// what a connection can hold). Without one, queue never waits (the client,
// whose calls must end by their deadline). direct: see batchWriter.
func newBatchWriter(c net.Conn, limit int, direct bool, onFail func(error)) *batchWriter {
	w := &batchWriter{conn: c, limit: limit, direct: direct, onFail: onFail,
		wake: make(chan struct{}, 1), exited: make(chan struct{})}
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
	if w.direct && !w.writing {
		w.writing = true
		w.mu.Unlock()
		w.flush()
		return nil
	}
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

// run writes queued frames, when nobody else is, until close drains them or
// a write fails.
func (w *batchWriter) run() {
	defer close(w.exited)
	for range w.wake {
		w.mu.Lock()
		if w.writing {
			// The writer takes what is queued, and pokes again when it
			// stops while closing.
			w.mu.Unlock()
			continue
		}
		if w.broken || (w.closing && len(w.queued) == 0) {
			w.mu.Unlock()
			return
		}
		w.writing = true
		w.mu.Unlock()
		w.flush()
	}
}

// flush writes what is queued, and what is queued meanwhile, then lets go
// of writing. The caller holds it.
func (w *batchWriter) flush() {
	// Let the goroutines that are ready to run go first: on a busy node
	// they are mostly handlers about to queue their answers, which then
	// share this write. Writing at once instead, the writer took about
	// one frame per write under 64 clients. On an idle node nothing else
	// is ready and this returns at once.
	runtime.Gosched()
	w.mu.Lock()
	out := w.spare
	w.spare = nil
	for {
		out, w.queued = w.queued, out[:0]
		w.space.Broadcast()
		if len(out) == 0 {
			w.spare = out
			w.writing = false
			closing := w.closing
			w.mu.Unlock()
			if closing {
				w.poke() // run ends once the queue is empty
			}
			return
		}
		w.mu.Unlock()
		if _, err := w.conn.Write(out); err != nil {
			w.mu.Lock()
			w.broken = true
			w.writing = false
			w.closeLocked(err)
			w.mu.Unlock()
			w.poke()
			w.onFail(err)
			return
		}
		if cap(out) > keepBuffer {
			out = nil
		}
		w.mu.Lock()
	}
}

// close refuses further frames with err; what is already queued is still
// written (unless the connection is broken), and then run exits.
func (w *batchWriter) close(err error) {
	w.mu.Lock()
	w.closeLocked(err)
	w.mu.Unlock()
	w.poke()
}

func (w *batchWriter) closeLocked(err error) {
	if w.err == nil {
		w.err = err
	}
	w.closing = true
	w.space.Broadcast()
}
