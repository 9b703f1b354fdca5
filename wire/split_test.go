package wire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// split serves ln's native connections with an echo Server and hands the
// others out on the returned channel (closed at cleanup with the listener).
type split struct {
	addr     string
	srv      *Server
	ln       net.Listener // what Split returned
	accepted chan net.Conn
	acceptEr chan error
}

func startSplit(t *testing.T, cfg ServerConfig, ln net.Listener) *split {
	t.Helper()
	f := &fixture{started: make(chan string, 16), release: make(chan struct{})}
	srv, err := NewServer(cfg, f.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &split{addr: ln.Addr().String(), srv: srv, ln: srv.Split(ln), accepted: make(chan net.Conn, 16), acceptEr: make(chan error, 1)}
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := s.ln.Accept()
			if err != nil {
				s.acceptEr <- err
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Server.Close: %v", err)
		}
	})
	t.Cleanup(func() {
		_ = s.ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	t.Cleanup(f.unblock)
	return s
}

// rawDial opens a plain TCP connection, closed at cleanup, with a read
// deadline of testTimeout.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	return c
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func readN(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// Split serves the connections that open with the preface and hands every
// other one out unchanged, whatever its first bytes.
func TestSplitRoutesByFirstBytes(t *testing.T) {
	cfg := testConfig()
	s := startSplit(t, cfg, listen(t))
	echo, _ := proto.Marshal(&ringkvv1.GetRequest{Key: []byte("native")})
	request := appendRequestHeader(nil, 7, MethodGet, 0, len(echo))
	request = append(request, echo...)

	for _, tc := range []struct {
		name   string
		writes []string
		native bool
	}{
		{"HTTP/1.1 request", []string{"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"}, false},
		{"HTTP/2 preface", []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}, false},
		{"one byte", []string{"G"}, false},
		{"starts like the preface", []string{"RINGKV/2 SOMETHING ELSE ENTIRELY\r\n\r\n"}, false},
		{"binary", []string{"\x00\x01\x02\xff"}, false},
		{"preface", []string{Preface}, true},
		{"preface with a request", []string{Preface + string(request)}, true},
		{"preface in pieces", []string{Preface[:1], Preface[1:9], Preface[9:]}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, s.addr)
			var sent []byte
			for _, w := range tc.writes {
				write(t, c, []byte(w))
				sent = append(sent, w...)
			}
			if tc.native {
				r := bufio.NewReader(c)
				if got := readN(t, r, len(Preface)); string(got) != Preface {
					t.Fatalf("server answered %q, want the preface", got)
				}
				if len(sent) == len(Preface) {
					write(t, c, request)
				}
				// The answer to request 7: the echoed key.
				hdr := readN(t, r, responseHeader)
				body := readN(t, r, int(binary.BigEndian.Uint32(hdr))-(responseHeader-4))
				var resp ringkvv1.GetResponse
				if binary.BigEndian.Uint32(hdr[4:]) != 7 || hdr[8] != codeOK || proto.Unmarshal(body, &resp) != nil || string(resp.Value) != "native" {
					t.Fatalf("answer % x % x", hdr, body)
				}
				select {
				case hc := <-s.accepted:
					t.Fatalf("a native connection was also handed out (%v)", hc.RemoteAddr())
				default:
				}
				return
			}
			hc := recv(t, s.accepted, "the connection to be handed out")
			_ = hc.SetReadDeadline(time.Now().Add(testTimeout))
			if got := readN(t, hc, len(sent)); !bytes.Equal(got, sent) {
				t.Fatalf("handed-out connection read %q, want %q", got, sent)
			}
			// Writes go to the connection itself.
			if _, err := hc.Write([]byte("reply")); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, c, 5); string(got) != "reply" {
				t.Fatalf("client read %q", got)
			}
		})
	}
}

// The buffer under the handed-out connections keeps bytes in order across
// frames and reads, and leaves read deadlines and CloseWrite working
// (formerly node/bufconn_test.go).
func TestBufferedConnReadsInOrderAndKeepsDeadlines(t *testing.T) {
	s := startSplit(t, testConfig(), listen(t))
	cli := rawDial(t, s.addr)

	// Two frames written in one segment, then a third after a pause: reads
	// of a frame header's 9 bytes must return them in order, unchanged.
	want := append(bytes.Repeat([]byte("a"), 9), bytes.Repeat([]byte("b"), 40)...)
	later := []byte("0123456789")
	write(t, cli, want)
	srv := recv(t, s.accepted, "the connection")
	bc, ok := srv.(*bufferedConn)
	if !ok {
		t.Fatalf("Accept returned %T, want *bufferedConn", srv)
	}
	_ = srv.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(srv, got[:9]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(srv, got[9:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	write(t, cli, later)
	if got := readN(t, srv, len(later)); !bytes.Equal(got, later) {
		t.Fatalf("second read %q, want %q", got, later)
	}

	// A large write arrives whole and in order through the 16 KiB buffer.
	big := make([]byte, 3*readBuffer+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	go func() { _, _ = cli.Write(big) }()
	if got := readN(t, srv, len(big)); !bytes.Equal(got, big) {
		t.Fatal("a large write arrived changed")
	}

	// A read deadline still applies through the buffer.
	_ = srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	start := time.Now()
	if _, err := srv.Read(make([]byte, 1)); err == nil {
		t.Fatal("read with nothing sent and a passed deadline returned no error")
	} else if !isTimeout(err) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("the deadline fired after %v", elapsed)
	}
	// And clearing it lets reads go on.
	_ = srv.SetReadDeadline(time.Time{})
	write(t, cli, []byte("z"))
	if got := readN(t, srv, 1); string(got) != "z" {
		t.Fatalf("read %q after clearing the deadline", got)
	}

	// CloseWrite reaches the TCP connection: the peer reads EOF.
	if err := bc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := cli.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite: %d, %v; want 0, EOF", n, err)
	}
}

// A connection that sends nothing within SniffTimeout is closed; it holds
// up no other connection meanwhile. One that sent part of the preface is
// handed to net/http with those bytes.
func TestSniffTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.SniffTimeout = 200 * time.Millisecond
	s := startSplit(t, cfg, listen(t))

	start := time.Now()
	silent := rawDial(t, s.addr)
	partial := rawDial(t, s.addr)
	write(t, partial, []byte(Preface[:8]))

	// Others are served while those wait.
	other := rawDial(t, s.addr)
	write(t, other, []byte("GET"))
	hc := recv(t, s.accepted, "another connection")
	_ = hc.SetReadDeadline(time.Now().Add(testTimeout))
	if got := readN(t, hc, 3); string(got) != "GET" {
		t.Fatal("wrong connection handed out")
	}
	mustEcho(t, dial(t, s.addr), "native while others sniff")

	n, err := silent.Read(make([]byte, 1))
	elapsed := time.Since(start)
	if n != 0 || err != io.EOF {
		t.Fatalf("silent connection read %d, %v; want it closed (EOF)", n, err)
	}
	if elapsed < cfg.SniffTimeout*3/4 || elapsed > 5*time.Second {
		t.Fatalf("silent connection closed after %v, SniffTimeout is %v", elapsed, cfg.SniffTimeout)
	}

	hc = recv(t, s.accepted, "the partial-preface connection")
	_ = hc.SetReadDeadline(time.Now().Add(testTimeout))
	if got := readN(t, hc, 8); string(got) != Preface[:8] {
		t.Fatalf("handed out with %q, want %q", got, Preface[:8])
	}
}

// The sniff's read deadline does not outlive the sniff: a native connection
// idle for longer than SniffTimeout keeps working.
func TestSniffDeadlineIsCleared(t *testing.T) {
	cfg := testConfig()
	cfg.SniffTimeout = 100 * time.Millisecond
	f := startFixture(t, cfg)
	c := dial(t, f.addr)
	timer := time.AfterFunc(3*cfg.SniffTimeout, f.unblock)
	t.Cleanup(func() { timer.Stop() })
	start := time.Now()
	mustEcho(t, c, keyBlock) // the server reads nothing more meanwhile
	if elapsed := time.Since(start); elapsed < 2*cfg.SniffTimeout {
		t.Fatalf("the blocked call returned after %v", elapsed)
	}
	mustEcho(t, c, "after an idle spell")
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// Closing the listener Split returned closes the one it wraps and ends
// Accept.
func TestSplitListenerClose(t *testing.T) {
	ln := listen(t)
	s := startSplit(t, testConfig(), ln)
	if err := s.ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := recv(t, s.acceptEr, "Accept to fail"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := s.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the wrapped listener still accepts: %v", err)
	}
	if c, err := net.Dial("tcp", s.addr); err == nil {
		_ = c.Close()
		t.Fatal("dialing the closed port succeeded")
	}
}

// flakyListener fails its first Accept with a temporary error, as accept(2)
// does when the process is out of file descriptors.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// net/http's Serve retries Accept errors that are Temporary (EMFILE, ENFILE,
// ECONNABORTED...), and the node's client port relied on that before Split.
func TestSplitSurvivesTemporaryAcceptError(t *testing.T) {
	if !syscall.EMFILE.Temporary() || syscall.EMFILE.Timeout() {
		t.Fatal("EMFILE is expected to be temporary and not a timeout")
	}
	s := startSplit(t, testConfig(), &flakyListener{Listener: listen(t)})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := Dial(ctx, &net.Dialer{}, s.addr)
	if err != nil {
		t.Fatalf("Dial after one EMFILE from accept: %v", err)
	}
	_ = c.Close()
}
