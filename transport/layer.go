package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Layer is one partition's view of the Mux: a net.Listener that yields only
// connections whose header named this partition, plus Dial for outgoing
// ones. It is safe for concurrent use.
//
// A Layer owns every connection it accepted or dialed: Close closes them
// all, so a removed replica leaves no socket behind.
type Layer struct {
	mux      *Mux
	pid      uint32
	incoming chan net.Conn // unbuffered: a handoff happens only into a waiting Accept
	done     chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}

	hangup atomic.Pointer[func()] // see OnHangup
}

var _ net.Listener = (*Layer)(nil)

func newLayer(m *Mux, pid uint32) *Layer {
	return &Layer{
		mux:      m,
		pid:      pid,
		incoming: make(chan net.Conn),
		done:     make(chan struct{}),
		conns:    make(map[*conn]struct{}),
	}
}

// OnHangup sets f to be called, on a goroutine of its own, whenever the
// peer of an accepted connection hangs up: a read of it ends with EOF or a
// reset. A Raft follower's inbound connections come from its leader, so
// this is the first sign that the leader's process is gone (its kernel
// closes the sockets at once). It is only a hint: a leader also closes
// connections it no longer needs.
func (l *Layer) OnHangup(f func()) { l.hangup.Store(&f) }

// Partition returns the partition id this layer serves.
func (l *Layer) Partition() uint32 { return l.pid }

// Addr returns the mux's advertised address.
func (l *Layer) Addr() net.Addr { return l.mux.advertise }

// Accept waits for the next connection for this partition. It answers the
// dialer's handshake with OK only now, so a dialer never sees OK for a
// connection nobody took. After Close it returns an error wrapping ErrClosed.
func (l *Layer) Accept() (net.Conn, error) {
	for {
		select {
		case <-l.done:
			return nil, l.errClosed()
		case c := <-l.incoming:
			tc, err := l.admit(c)
			if err == nil {
				return tc, nil
			}
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			// The dialer vanished between header and OK; wait for the next.
		}
	}
}

// admit takes ownership of a handed-off connection and completes the
// handshake on it.
func (l *Layer) admit(c net.Conn) (net.Conn, error) {
	tc, err := l.track(c)
	if err == nil {
		tc.inbound = true
	}
	if err != nil {
		writeStatus(c, statusUnknownPartition)
		_ = c.Close()
		return nil, err
	}
	if _, err := c.Write([]byte{byte(statusOK)}); err != nil {
		_ = tc.Close()
		l.mux.log.Debug("transport: dialer left before the handshake finished",
			"remote", remoteString(c), "partition", l.pid, "err", err)
		return nil, err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		_ = tc.Close()
		return nil, err
	}
	return tc, nil
}

// offer hands c to a waiting Accept before the handshake deadline. It
// reports whether the layer took c; if not, the caller closes c.
func (l *Layer) offer(c net.Conn, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case l.incoming <- c:
		return true
	case <-l.done:
		writeStatus(c, statusUnknownPartition)
	case <-l.mux.done:
	case <-t.C:
		l.mux.log.Info("transport: partition did not accept a connection within the handshake timeout",
			"remote", remoteString(c), "partition", l.pid, "timeout", l.mux.cfg.HandshakeTimeout)
	}
	return false
}

// Dial connects to the mux at address and names this layer's partition. A
// timeout <= 0 means the mux's HandshakeTimeout; it bounds connect and
// handshake together. Refusals map to ErrUnknownPartition, ErrWrongCluster
// and ErrBadHeader; a late answer to ErrHandshakeTimeout.
func (l *Layer) Dial(address string, timeout time.Duration) (net.Conn, error) {
	if l.isClosed() {
		return nil, l.errClosed()
	}
	if timeout <= 0 {
		timeout = l.mux.cfg.HandshakeTimeout
	}
	h := header{clusterID: l.mux.currentClusterID(), partition: l.pid}
	if len(h.clusterID) > maxClusterIDLen {
		return nil, fmt.Errorf("transport: cluster id is %d bytes, the limit is %d (fix the id passed to SetClusterID)",
			len(h.clusterID), maxClusterIDLen)
	}
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s for partition %d: %w", address, l.pid, err)
	}
	// Track before the handshake so Close can abort it.
	tc, err := l.track(c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := l.dialHandshake(c, address, deadline, h); err != nil {
		_ = tc.Close()
		return nil, err
	}
	return tc, nil
}

func (l *Layer) dialHandshake(c net.Conn, address string, deadline time.Time, h header) error {
	if err := c.SetDeadline(deadline); err != nil {
		return l.dialErr(address, err)
	}
	var buf [maxHeaderLen]byte
	if _, err := c.Write(appendHeader(buf[:0], h)); err != nil {
		return l.dialErr(address, err)
	}
	var st [1]byte
	if _, err := io.ReadFull(c, st[:]); err != nil {
		return l.dialErr(address, err)
	}
	switch status(st[0]) {
	case statusOK:
		if err := c.SetDeadline(time.Time{}); err != nil {
			return l.dialErr(address, err)
		}
		return nil
	case statusUnknownPartition:
		return fmt.Errorf("%w (peer %s, partition %d)", ErrUnknownPartition, address, l.pid)
	case statusWrongCluster:
		return fmt.Errorf("%w (peer %s, partition %d, our cluster %q)", ErrWrongCluster, address, l.pid, h.clusterID)
	case statusBadHeader:
		return fmt.Errorf("%w (peer %s rejected our header, partition %d)", ErrBadHeader, address, l.pid)
	default:
		return fmt.Errorf("%w (peer %s answered unknown status byte 0x%02x, partition %d)", ErrBadHeader, address, st[0], l.pid)
	}
}

// dialErr gives an I/O failure during the handshake its sentinel.
func (l *Layer) dialErr(address string, err error) error {
	switch {
	case l.isClosed():
		return fmt.Errorf("%w (partition %d layer closed while dialing %s): %w", ErrClosed, l.pid, address, err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w (peer %s, partition %d): %w", ErrHandshakeTimeout, address, l.pid, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("transport: peer %s closed the connection during the handshake for partition %d (shutting down?): %w",
			address, l.pid, err)
	default:
		return fmt.Errorf("transport: handshake with %s for partition %d: %w", address, l.pid, err)
	}
}

// track registers c as owned by l, or fails with ErrClosed.
func (l *Layer) track(c net.Conn) (*conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, l.errClosed()
	}
	tc := &conn{Conn: c, layer: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *Layer) forget(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

func (l *Layer) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *Layer) errClosed() error {
	return fmt.Errorf("%w (partition %d layer)", ErrClosed, l.pid)
}

// Close unregisters the layer, so later dials to this node for the
// partition get ErrUnknownPartition, unblocks Accept, and closes every
// connection the layer owns. The partition may be registered again with
// Mux.Listen afterwards. Close is idempotent and returns nil.
func (l *Layer) Close() error {
	l.mux.unregister(l)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return nil
}

// conn is a connection owned by a Layer; closing it releases the ownership.
type conn struct {
	net.Conn
	layer   *Layer
	inbound bool // accepted, not dialed
	hungUp  atomic.Bool
}

// Read reports the peer's hangup of an inbound connection (see OnHangup),
// once per connection. Errors of our own close are not hangups.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && c.inbound && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
		if f := c.layer.hangup.Load(); f != nil && c.hungUp.CompareAndSwap(false, true) {
			go (*f)()
		}
	}
	return n, err
}

func (c *conn) Close() error {
	c.layer.forget(c)
	return c.Conn.Close()
}
