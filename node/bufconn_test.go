package node

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func TestBufferedListenerReadsAndHalfCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bl := bufferedListener{ln}
	defer bl.Close()

	// Two frames written in one segment, then a third after a pause: reads
	// of a frame header's 9 bytes must return them in order, unchanged.
	want := append(bytes.Repeat([]byte("a"), 9), bytes.Repeat([]byte("b"), 40)...)
	later := []byte("0123456789")
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, ok := srv.(*bufferedConn); !ok {
		t.Fatalf("Accept returned %T, want *bufferedConn", srv)
	}
	if _, err := cli.Write(want); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetReadDeadline(time.Now().Add(10 * time.Second))
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
	if _, err := cli.Write(later); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len(later))
	if _, err := io.ReadFull(srv, got); err != nil || !bytes.Equal(got, later) {
		t.Fatalf("second read %q, %v; want %q", got, err, later)
	}

	// A read deadline still applies through the buffer.
	_ = srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := srv.Read(make([]byte, 1)); err == nil {
		t.Fatal("read with nothing sent and a passed deadline returned no error")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}

	// CloseWrite reaches the TCP connection: the peer reads EOF.
	if err := srv.(*bufferedConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := cli.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite: %d, %v; want 0, EOF", n, err)
	}
}
