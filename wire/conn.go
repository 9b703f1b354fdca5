package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
)

// DefaultMaxResponseBytes is the largest answer a Conn takes by default.
const DefaultMaxResponseBytes = 64 << 20

// Conn is the client side of one native connection. Calls are pipelined:
// any number may be in flight, each answered by its id, and the requests
// queued while a write is in progress share the next one. It is safe for
// concurrent use. Once broken (Err is not nil) it stays broken: dial anew.
type Conn struct {
	conn        net.Conn
	r           *bufio.Reader
	w           *batchWriter
	maxResponse int

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan answer
	err     error         // why the connection broke
	broken  chan struct{} // closed when err is set

	framesRead atomic.Uint64 // answers read so far (see Call's no-answer rule)
}

type answer struct {
	code    uint8
	payload []byte
}

// Dial connects to addr and exchanges the preface within ctx. A server that
// answers something else gives an error wrapping ErrNotNative (a node that
// predates the protocol, or not a RingKV node). Failures before the preface
// is answered are *net.OpError with Op "dial": no request was sent.
func Dial(ctx context.Context, d *net.Dialer, addr string) (*Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReaderSize(nc, readBuffer)
	got := make([]byte, len(Preface))
	_, err = nc.Write([]byte(Preface))
	if err == nil {
		_, err = io.ReadFull(r, got)
	}
	if err == nil && string(got) != Preface {
		_ = nc.Close()
		return nil, fmt.Errorf("%w: %s answered %q", ErrNotNative, addr, got)
	}
	if err != nil {
		_ = nc.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: nc.RemoteAddr(), Err: fmt.Errorf("native protocol preface: %w", err)}
	}
	if !stop() {
		_ = nc.Close() // ctx ended just as the preface came
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: nc.RemoteAddr(), Err: ctx.Err()}
	}
	_ = nc.SetDeadline(time.Time{})
	c := &Conn{
		conn: nc, r: r, maxResponse: DefaultMaxResponseBytes,
		pending: map[uint32]chan answer{}, broken: make(chan struct{}),
	}
	c.w = newBatchWriter(nc, 0, false, c.fail)
	go c.w.run()
	go c.readLoop()
	return c, nil
}

// Err returns why the connection broke, or nil while it works.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close breaks the connection; calls in flight fail with ErrClosed.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	return nil
}

// Call sends req as method m and waits for the answer, which it decodes into
// resp. The caller's deadline travels with the request. It returns:
//   - nil, with resp filled in;
//   - a *connect.Error for which connect.IsWireError is true: the server's
//     answer (not found, not leader...);
//   - ctx's error (wrapped) when ctx ended first: the request may have run;
//   - another error when the connection broke: the request may have run
//     unless it is a *net.OpError from the dial.
func (c *Conn) Call(ctx context.Context, m Method, req, resp proto.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	ch := make(chan answer, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	readBefore := c.framesRead.Load()
	var merr error
	werr := c.w.queue(func(b []byte) []byte {
		start := len(b)
		b = appendRequestHeader(b, id, m, timeout, proto.Size(req))
		if b, merr = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, req); merr != nil {
			return b[:start]
		}
		return b
	})
	if werr != nil || merr != nil {
		c.forget(id)
		if merr != nil {
			return fmt.Errorf("wire: encoding the %s request: %w", m, merr)
		}
		return werr
	}
	select {
	case a := <-ch:
		return c.decode(m, a, resp)
	case <-c.broken:
		c.forget(id)
		select {
		case a := <-ch: // answered just before the break: the answer stands
			return c.decode(m, a, resp)
		default:
		}
		return c.Err()
	case <-ctx.Done():
		c.forget(id)
		if c.framesRead.Load() == readBefore {
			// Not a single frame since this request went out: the server is
			// gone, paused or cut off (a dead peer never resets the socket).
			// The next call dials anew rather than queue behind it.
			c.fail(fmt.Errorf("wire: no answer at all from %s since a call that ended (%v) was sent", c.conn.RemoteAddr(), ctx.Err()))
		}
		return fmt.Errorf("wire: %s: %w", m, ctx.Err())
	}
}

// decode turns an answer into Call's result.
func (c *Conn) decode(m Method, a answer, resp proto.Message) error {
	if a.code != codeOK {
		ce, err := parseError(a.code, a.payload)
		if err != nil {
			c.fail(err)
			return err
		}
		return ce
	}
	if err := proto.Unmarshal(a.payload, resp); err != nil {
		return fmt.Errorf("%w: decoding the %s response: %v", ErrProtocol, m, err)
	}
	return nil
}

func (c *Conn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// readLoop hands each answer to its call until the connection breaks.
func (c *Conn) readLoop() {
	hdr := make([]byte, responseHeader)
	for {
		n, err := readLength(c.r, hdr, responseHeader-4)
		if err == nil {
			_, err = io.ReadFull(c.r, hdr[4:])
		}
		size := n - (responseHeader - 4)
		if err == nil && size > c.maxResponse {
			err = fmt.Errorf("%w: answer of %d bytes; the limit is %d", ErrProtocol, size, c.maxResponse)
		}
		var payload []byte
		if err == nil {
			payload = make([]byte, size)
			_, err = io.ReadFull(c.r, payload)
		}
		if err != nil {
			c.fail(err)
			return
		}
		c.framesRead.Add(1)
		id := binary.BigEndian.Uint32(hdr[4:])
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ok {
			ch <- answer{code: hdr[8], payload: payload}
		} // else its caller gave up
	}
}

// fail breaks the connection for good with err (the first error wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("wire: %s closed the connection: %w", c.conn.RemoteAddr(), err)
	}
	c.err = err
	close(c.broken)
	c.mu.Unlock()
	c.w.close(err)
	_ = c.conn.Close()
}
