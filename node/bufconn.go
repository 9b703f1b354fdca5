package node

import (
	"bufio"
	"net"
)

// clientReadBuffer is the read buffer of each client-port connection.
const clientReadBuffer = 16 << 10

// bufferedListener hands out connections whose reads go through a buffer.
// net/http's HTTP/2 server reads from the bare connection: every frame costs
// two read syscalls (its 9-byte header, then its payload), so a unary call
// (HEADERS, DATA, often a WINDOW_UPDATE) made four to six. Through the
// buffer one syscall returns every frame that has arrived.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, clientReadBuffer)}, nil
}

// bufferedConn reads through r; everything else (writes, deadlines, Close)
// goes to the connection itself. net/http reads a connection from one
// goroutine at a time, so r needs no lock.
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
