package transport

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Mux owns the node's peer listener and routes each accepted connection to
// the Layer of the partition its header names.
type Mux struct {
	ln        net.Listener
	cfg       Config
	log       *slog.Logger
	advertise net.Addr
	clusterID atomic.Pointer[string]

	mu         sync.Mutex
	layers     map[uint32]*Layer
	handshakes map[net.Conn]struct{} // accepted, not yet handed to a Layer
	// maxHandshakes caps handshakes in progress; tests lower it.
	maxHandshakes int
	serving       bool
	closed        bool
	done          chan struct{} // closed by Close

	wg sync.WaitGroup // handshake goroutines
}

// NewMux wraps ln. The Mux owns ln from here on: Close closes it. Call Serve
// to start accepting.
func NewMux(ln net.Listener, cfg Config) (*Mux, error) {
	if ln == nil {
		return nil, errors.New("transport: NewMux needs a listener")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	adv := cfg.AdvertiseAddr
	if adv == "" {
		adv = ln.Addr().String()
		if err := checkAdvertisable(adv); err != nil {
			return nil, err
		}
	}
	m := &Mux{
		ln:            ln,
		cfg:           cfg,
		log:           cfg.Logger,
		advertise:     addr(adv),
		layers:        make(map[uint32]*Layer),
		handshakes:    make(map[net.Conn]struct{}),
		maxHandshakes: defaultMaxHandshakes,
		done:          make(chan struct{}),
	}
	m.clusterID.Store(&cfg.ClusterID)
	return m, nil
}

// Addr returns the address the listener is bound to (Layer.Addr reports the
// advertised one).
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// SetClusterID changes the cluster id sent by later dials and required from
// later headers. Connections already established are not affected. An id
// over 64 bytes is logged here and makes every later Dial fail.
func (m *Mux) SetClusterID(id string) {
	if len(id) > maxClusterIDLen {
		m.log.Error("transport: cluster id over the limit; dials will fail", "bytes", len(id), "limit", maxClusterIDLen)
	}
	m.clusterID.Store(&id)
}

func (m *Mux) currentClusterID() string { return *m.clusterID.Load() }

// Serve accepts connections until Close and returns nil after Close. Each
// handshake runs in its own goroutine, so a slow or silent peer never delays
// another. Serve may be called once; after Close it returns nil at once.
func (m *Mux) Serve() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	if m.serving {
		m.mu.Unlock()
		return errors.New("transport: Serve called twice on one Mux")
	}
	m.serving = true
	m.mu.Unlock()

	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("transport: listener %s closed without Mux.Close: %w", m.ln.Addr(), err)
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("transport: accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-m.done:
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		switch m.startHandshake(c) {
		case handshakeStarted:
			go m.handshake(c)
		case handshakeShed:
			m.log.Warn("transport: too many handshakes in progress; closing new connection",
				"remote", remoteString(c), "limit", m.maxHandshakes)
			_ = c.Close()
		case handshakeMuxClosed:
			_ = c.Close()
			return nil
		}
	}
}

type handshakeStart int

const (
	handshakeStarted handshakeStart = iota
	handshakeShed
	handshakeMuxClosed
)

// startHandshake registers c so Close can cut it, unless the Mux is closed
// or already runs maxHandshakes handshakes (each may hold a goroutine for
// the whole handshake timeout, so a flood of silent connections is shed
// instead of piling up). wg.Add happens under mu so it never races with the
// Wait in Close.
func (m *Mux) startHandshake(c net.Conn) handshakeStart {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return handshakeMuxClosed
	case len(m.handshakes) >= m.maxHandshakes:
		return handshakeShed
	}
	m.handshakes[c] = struct{}{}
	m.wg.Add(1)
	return handshakeStarted
}

// handshake reads the header under the handshake deadline and either hands
// c to its partition's Layer or answers a failure status and closes it.
func (m *Mux) handshake(c net.Conn) {
	defer m.wg.Done()
	handedOff := false
	defer func() {
		m.mu.Lock()
		delete(m.handshakes, c)
		m.mu.Unlock()
		if !handedOff {
			_ = c.Close()
		}
	}()

	deadline := time.Now().Add(m.cfg.HandshakeTimeout)
	if err := c.SetDeadline(deadline); err != nil {
		return
	}
	remote := remoteString(c)
	h, err := readHeader(c)
	if err != nil {
		m.rejectUnreadable(c, remote, err)
		return
	}
	if want := m.currentClusterID(); h.clusterID != want {
		m.log.Warn("transport: refused connection from another cluster",
			"remote", remote, "partition", h.partition, "their_cluster", h.clusterID, "our_cluster", want)
		writeStatus(c, statusWrongCluster)
		return
	}
	l := m.layer(h.partition)
	if l == nil {
		m.log.Debug("transport: refused connection for a partition not hosted here",
			"remote", remote, "partition", h.partition)
		writeStatus(c, statusUnknownPartition)
		return
	}
	handedOff = l.offer(c, deadline)
}

// rejectUnreadable handles a header that could not be read: a silent peer
// is cut, a malformed header gets the bad-header status.
func (m *Mux) rejectUnreadable(c net.Conn, remote string, err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		m.log.Info("transport: peer sent no complete header in time; closing",
			"remote", remote, "timeout", m.cfg.HandshakeTimeout)
	case errors.Is(err, io.EOF):
		// A bare connect and close, e.g. a TCP health check.
	case errors.Is(err, ErrBadHeader), errors.Is(err, io.ErrUnexpectedEOF):
		m.log.Warn("transport: refused malformed connection header", "remote", remote, "err", err)
		writeStatus(c, statusBadHeader)
		lingerClose(c)
	default:
		m.log.Debug("transport: handshake read failed", "remote", remote, "err", err)
	}
}

// lingerClose half-closes c and discards what the peer still sends, within
// the handshake deadline already set. Closing a socket with unread input
// makes the kernel send a reset, which can destroy the status byte in flight.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// remoteString never panics, whatever net.Conn the listener produced.
func remoteString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return "unknown"
}

func writeStatus(c net.Conn, s status) {
	_, _ = c.Write([]byte{byte(s)})
}

// Listen registers a Layer for partition pid.
func (m *Mux) Listen(pid uint32) (*Layer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("%w: mux on %s (partition %d)", ErrClosed, m.ln.Addr(), pid)
	}
	if _, ok := m.layers[pid]; ok {
		return nil, fmt.Errorf("%w (partition %d)", ErrPartitionRegistered, pid)
	}
	l := newLayer(m, pid)
	m.layers[pid] = l
	return l, nil
}

func (m *Mux) layer(pid uint32) *Layer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.layers[pid]
}

// unregister removes l unless a newer layer already took its place.
func (m *Mux) unregister(l *Layer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.layers[l.pid] == l {
		delete(m.layers, l.pid)
	}
}

func (m *Mux) isClosed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Close closes the listener, every layer (and so every connection they
// own) and every handshake in progress, and waits for the handshake
// goroutines to finish. Serve then returns nil. Close is idempotent.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	layers := make([]*Layer, 0, len(m.layers))
	for _, l := range m.layers {
		layers = append(layers, l)
	}
	pending := make([]net.Conn, 0, len(m.handshakes))
	for c := range m.handshakes {
		pending = append(pending, c)
	}
	m.mu.Unlock()

	err := m.ln.Close()
	for _, l := range layers {
		_ = l.Close()
	}
	for _, c := range pending {
		_ = c.Close()
	}
	m.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close listener %s: %w", m.ln.Addr(), err)
	}
	return nil
}

// addr is an advertised host:port as a net.Addr.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
