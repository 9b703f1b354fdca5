// Package tcptest serves raw TCP connections on loopback for tests that need
// a peer speaking something other than the protocol under test: a server
// that says nothing, answers HTTP, or writes bytes chosen by the test.
package tcptest

import (
	"net"
	"sync"
	"testing"
)

// Serve accepts connections on a loopback port and runs serve on each in
// its own goroutine, and returns the address. Cleanup closes the listener
// and the connections and waits for every serve to return.
func Serve(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcptest: listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
