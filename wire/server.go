package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
)

// Handler serves one request: m names the method, payload holds its request
// message. It returns the response message, or an error: a *connect.Error is
// sent with its code, message and metadata; a context's error as
// DeadlineExceeded or Canceled, as Connect does; any other as Unknown.
// Handlers run concurrently, each request on a worker goroutine (see worker).
type Handler func(ctx context.Context, m Method, payload []byte) (proto.Message, error)

// ServerConfig configures a Server.
type ServerConfig struct {
	// MaxRequestBytes is the largest request payload taken. A larger request
	// is skipped and answered with ResourceExhausted naming the limit; the
	// connection stays usable.
	MaxRequestBytes int
	// MaxInFlight is how many requests of one connection run at once; the
	// connection is not read further until one finishes.
	MaxInFlight int
	// SniffTimeout bounds how long a new connection on a shared port may take
	// to send its first bytes (see Split).
	SniffTimeout time.Duration
	// Budget, if set, maps the timeout a request carries (0: none) to how
	// long its handler may run (0 or less: no deadline). A server that
	// answers a little before its clients give up, or bounds requests that
	// carry no timeout, says so here, so that each request gets one
	// deadline (a timer and a context) rather than one more in the handler.
	Budget func(timeout time.Duration) time.Duration
	// BaseContext is the parent of every handler's context, for values the
	// handlers look up (nil: context.Background()). A forced Close cancels
	// the handlers' contexts either way.
	BaseContext context.Context
}

// DefaultServerConfig returns the defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{MaxRequestBytes: 16 << 20, MaxInFlight: 1024, SniffTimeout: 10 * time.Second}
}

// Validate reports the first problem with c, or nil.
func (c ServerConfig) Validate() error {
	switch {
	case c.MaxRequestBytes < 1:
		return fmt.Errorf("wire: MaxRequestBytes is %d; it must be positive", c.MaxRequestBytes)
	case c.MaxInFlight < 1:
		return fmt.Errorf("wire: MaxInFlight is %d; it must be positive", c.MaxInFlight)
	case c.SniffTimeout <= 0:
		return fmt.Errorf("wire: SniffTimeout is %v; it must be positive", c.SniffTimeout)
	}
	return nil
}

// Server serves the native protocol on connections handed to it by Split.
type Server struct {
	cfg     ServerConfig
	handler Handler
	log     *slog.Logger

	ctx    context.Context // handlers' base context; canceled by a forced close
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	closed bool
	wg     sync.WaitGroup // one per connection being served

	// work hands requests to waiting workers; unbuffered, so a send
	// succeeds only when one waits. Close closes it once no connection is
	// left to send, which ends the waiting workers.
	work     chan job
	idle     atomic.Int32 // workers waiting on work
	workDone sync.Once
}

// maxIdleWorkers bounds the workers that wait for requests; a worker that
// finds this many already waiting exits instead.
const maxIdleWorkers = 256

// job is one request read from a connection, to be run by a worker.
type job struct {
	sc      *serverConn
	id      uint32
	m       Method
	timeout time.Duration
	payload []byte
}

// NewServer returns a Server that answers requests with h.
func NewServer(cfg ServerConfig, h Handler, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, handler: h, log: log, conns: map[*serverConn]struct{}{},
		work: make(chan job)}
	base := cfg.BaseContext
	if base == nil {
		base = context.Background()
	}
	s.ctx, s.cancel = context.WithCancel(base)
	return s, nil
}

// maxUnwritten is how many bytes of answers a connection holds for a client
// that does not read them before its handlers wait (and with them, through
// MaxInFlight, the reading of further requests).
const maxUnwritten = 1 << 20

// serverConn is one client connection.
type serverConn struct {
	conn     net.Conn
	w        *batchWriter
	sem      chan struct{}  // MaxInFlight slots
	handlers sync.WaitGroup // requests started and not yet answered
}

// serve answers the requests on c, whose preface has been read from r, until
// the client goes away or the server closes.
func (s *Server) serve(c net.Conn, r *bufio.Reader) {
	// Handlers write their own answers when nobody is writing (direct); a
	// failed write ends the reads too.
	sc := &serverConn{conn: c, w: newBatchWriter(c, maxUnwritten, true, func(error) { _ = c.Close() }),
		sem: make(chan struct{}, s.cfg.MaxInFlight)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
		s.wg.Done()
	}()

	go sc.w.run()
	_ = sc.w.queue(func(b []byte) []byte { return append(b, Preface...) })
	err := s.readRequests(sc, r, func(id uint32, m Method, timeout time.Duration, payload []byte) {
		sc.sem <- struct{}{}
		sc.handlers.Add(1)
		s.start(job{sc: sc, id: id, m: m, timeout: timeout, payload: payload})
	})
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		s.log.Debug("native client connection ended", "remote", c.RemoteAddr(), "error", err)
	}
	// Answer what was asked, then hang up.
	sc.handlers.Wait()
	sc.w.close(ErrClosed)
	<-sc.w.exited
	_ = c.Close()
}

// readRequests reads request frames until the connection fails, calling
// start for each one that fits the limit and answering the others.
func (s *Server) readRequests(sc *serverConn, r *bufio.Reader, start func(uint32, Method, time.Duration, []byte)) error {
	hdr := make([]byte, requestHeader)
	for {
		n, err := readLength(r, hdr, requestHeader-4)
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(r, hdr[4:]); err != nil {
			return err
		}
		id := binary.BigEndian.Uint32(hdr[4:])
		m := Method(hdr[8])
		timeout := time.Duration(binary.BigEndian.Uint32(hdr[9:])) * time.Millisecond
		size := n - (requestHeader - 4)
		if size > s.cfg.MaxRequestBytes {
			if _, err := r.Discard(size); err != nil {
				return err
			}
			s.answerError(sc, id, connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("request is %d bytes; the limit is %d bytes", size, s.cfg.MaxRequestBytes)))
			continue
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		start(id, m, timeout, payload)
	}
}

// start hands r to a waiting worker, or starts a new one.
func (s *Server) start(r job) {
	select {
	case s.work <- r:
	default:
		go s.worker(r)
	}
}

// worker runs r, then waits for the next request instead of exiting, unless
// maxIdleWorkers already wait. A fresh goroutine's stack grows two or three
// times while a request runs (a Pebble read is deep), each time a copy of
// the whole stack; a worker's stays grown (until a garbage collection
// finds it idle and shrinks it), so most requests pay no growth at all.
func (s *Server) worker(r job) {
	for {
		s.handle(r.sc, r.id, r.m, r.timeout, r.payload)
		<-r.sc.sem
		r.sc.handlers.Done()
		r = job{} // hold no payload while idle
		if s.idle.Add(1) > maxIdleWorkers {
			s.idle.Add(-1)
			return
		}
		var ok bool
		r, ok = <-s.work // a plain receive, cheaper than a select
		s.idle.Add(-1)
		if !ok {
			return
		}
	}
}

// handle runs one request and queues its answer.
func (s *Server) handle(sc *serverConn, id uint32, m Method, timeout time.Duration, payload []byte) {
	ctx := s.ctx
	if s.cfg.Budget != nil {
		timeout = s.cfg.Budget(timeout)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := s.call(ctx, m, payload)
	if err != nil {
		s.answerError(sc, id, err)
		return
	}
	var merr error
	_ = sc.w.queue(func(b []byte) []byte {
		start := len(b)
		b, at := appendResponseHeader(b, id, codeOK)
		if b, merr = (proto.MarshalOptions{}).MarshalAppend(b, resp); merr != nil {
			return b[:start]
		}
		patchLength(b, at)
		return b
	})
	if merr != nil {
		s.answerError(sc, id, connect.NewError(connect.CodeInternal, fmt.Errorf("encoding the %s response: %w", m, merr)))
	}
}

// call runs the handler, turning a panic into an Internal error: one bad
// request must not take the node down.
func (s *Server) call(ctx context.Context, m Method, payload []byte) (resp proto.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving a native request", "method", m, "panic", p, "stack", string(debug.Stack()))
			resp, err = nil, connect.NewError(connect.CodeInternal, fmt.Errorf("the node failed serving %s; see its log", m))
		}
	}()
	return s.handler(ctx, m, payload)
}

func (s *Server) answerError(sc *serverConn, id uint32, err error) {
	ce, ok := errors.AsType[*connect.Error](err)
	switch {
	case ok:
	case errors.Is(err, context.DeadlineExceeded): // as Connect's handlers do
		ce = connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		ce = connect.NewError(connect.CodeCanceled, err)
	default:
		ce = connect.NewError(connect.CodeUnknown, err)
	}
	_ = sc.w.queue(func(b []byte) []byte {
		b, at := appendResponseHeader(b, id, uint8(ce.Code()))
		b = appendError(b, ce)
		patchLength(b, at)
		return b
	})
}

// Close stops taking requests: connections stop being read, the requests
// already read are answered, then the connections close. When ctx ends
// first, running handlers' contexts are canceled and the connections closed
// at once. Close waits for every connection either way.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for sc := range s.conns {
		_ = sc.conn.SetReadDeadline(time.Now()) // ends readRequests
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Once every connection has ended, nothing sends work: the waiting
	// workers exit.
	defer s.workDone.Do(func() { close(s.work) })
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for sc := range s.conns {
		_ = sc.conn.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}
