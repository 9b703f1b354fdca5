package wire

import (
	"bufio"
	"errors"
	"net"
	"time"
)

// readBuffer is the read buffer of each accepted connection.
const readBuffer = 16 << 10

// Split accepts connections on ln and looks at their first bytes: native
// ones (they open with Preface) are served by s, every other one is handed
// out by the returned listener, for net/http. Connections of both kinds read
// through a buffer (see bufferedConn). Closing the returned listener closes
// ln; s is closed separately.
func (s *Server) Split(ln net.Listener) net.Listener {
	l := &splitListener{Listener: ln, s: s, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

type splitListener struct {
	net.Listener
	s     *Server
	conns chan net.Conn
	done  chan struct{} // closed when ln fails for good
	err   error         // why; set before done closes
}

func (l *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *splitListener) Close() error {
	err := l.Listener.Close()
	<-l.done // the accept loop has stopped handing out connections
	return err
}

func (l *splitListener) acceptLoop() {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors and the like: wait and go on, as
				// net/http's own accept loop does. Only Close ends it.
				l.s.log.Warn("accepting a client connection failed; retrying", "error", err, "in", backoff)
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			l.err = err
			close(l.done)
			return
		}
		backoff = 5 * time.Millisecond
		go l.sniff(c)
	}
}

// sniff reads as little as tells the two protocols apart: one byte, and the
// whole preface only when that byte starts it.
func (l *splitListener) sniff(c net.Conn) {
	br := bufio.NewReaderSize(c, readBuffer)
	_ = c.SetReadDeadline(time.Now().Add(l.s.cfg.SniffTimeout))
	b, err := br.Peek(1)
	native := false
	if err == nil && b[0] == Preface[0] {
		b, err = br.Peek(len(Preface))
		native = string(b) == Preface
	}
	if err != nil && len(b) == 0 {
		_ = c.Close() // sent nothing in time, or hung up
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	bc := &bufferedConn{Conn: c, r: br}
	if native {
		_, _ = br.Discard(len(Preface))
		l.s.serve(bc, br)
		return
	}
	select {
	case l.conns <- bc:
	case <-l.done:
		_ = c.Close()
	}
}

// bufferedConn reads through r; everything else (writes, deadlines, Close)
// goes to the connection itself. net/http's HTTP/2 server reads from the bare
// connection: every frame costs two read syscalls (its 9-byte header, then
// its payload), so a unary call (HEADERS, DATA, often a WINDOW_UPDATE) made
// four to six. Through the buffer one syscall returns every frame that has
// arrived. Each connection is read by one goroutine at a time, so r needs no
// lock.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite keeps net/http's half-close of HTTP/1.1 connections working.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
