package transport

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests; reaching it is a failure,
// never the expected path.
const waitLimit = 10 * time.Second

// newTestMux starts a serving Mux on 127.0.0.1:0 and closes it at cleanup,
// checking that Serve then returns nil.
func newTestMux(t testing.TB, mutate func(*Config)) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return serveMux(t, ln, mutate)
}

// serveMux is newTestMux on a listener the test made.
func serveMux(t testing.TB, ln net.Listener, mutate func(*Config)) *Mux {
	t.Helper()
	cfg := TestConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := NewMux(ln, cfg)
	if err != nil {
		_ = ln.Close()
		t.Fatalf("NewMux: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Mux.Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v after Close, want nil", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Serve did not return after Close")
		}
	})
	return m
}

func mustListen(t testing.TB, m *Mux, pid uint32) *Layer {
	t.Helper()
	l, err := m.Listen(pid)
	if err != nil {
		t.Fatalf("Listen(%d): %v", pid, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

type acceptResult struct {
	c   net.Conn
	err error
}

// acceptAsync runs one Accept in the background.
func acceptAsync(l *Layer) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept()
		ch <- acceptResult{c, err}
	}()
	return ch
}

func waitAccept(t testing.TB, ch <-chan acceptResult) acceptResult {
	t.Helper()
	return recvWithin(t, ch, "Accept did not return")
}

// recvWithin receives from ch, or fails the test with "<what> within
// waitLimit".
func recvWithin[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s within %v", what, waitLimit)
		var zero T
		return zero
	}
}

// connect dials p from layer from to mux to and returns both ends.
func connect(t testing.TB, from *Layer, to *Layer) (dialed, accepted net.Conn) {
	t.Helper()
	ch := acceptAsync(to)
	dialed, err := from.Dial(to.mux.Addr().String(), waitLimit)
	if err != nil {
		t.Fatalf("Dial partition %d: %v", from.pid, err)
	}
	t.Cleanup(func() { _ = dialed.Close() })
	r := waitAccept(t, ch)
	if r.err != nil {
		t.Fatalf("Accept partition %d: %v", to.pid, r.err)
	}
	t.Cleanup(func() { _ = r.c.Close() })
	return dialed, r.c
}

// exchange sends msg from a to b and back, failing on any mismatch.
func exchange(t testing.TB, a, b net.Conn, msg string) {
	t.Helper()
	for _, dir := range []struct{ w, r net.Conn }{{a, b}, {b, a}} {
		if _, err := dir.w.Write([]byte(msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = dir.r.SetReadDeadline(time.Now().Add(waitLimit))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(dir.r, buf); err != nil {
			t.Fatalf("read: %v", err)
		}
		_ = dir.r.SetReadDeadline(time.Time{})
		if string(buf) != msg {
			t.Fatalf("read %q, want %q", buf, msg)
		}
	}
}

// rawDial opens a plain TCP connection, bypassing the handshake.
func rawDial(t testing.TB, m *Mux) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.Addr().String(), waitLimit)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// readClosed waits until the peer closes c and fails if it sends data.
func readClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	var b [1]byte
	n, err := c.Read(b[:])
	if n > 0 {
		t.Fatalf("read %#x, want the connection closed", b[0])
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("read: %v, want the connection closed", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// stillOpen reports whether c is open with nothing to read right now.
func stillOpen(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	var b [1]byte
	_, err := c.Read(b[:])
	return isTimeout(err)
}
