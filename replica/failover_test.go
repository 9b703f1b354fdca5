package replica

import (
	"net"
	"testing"
	"time"
)

// PortRefuses after a hangup: a port already closed refuses at once; one
// that closes a moment later (a killed process's listener, closed after
// its connections) is still found refused; one that stays open is not.
func TestPortRefuses(t *testing.T) {
	listen := func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() { // accept and drop, like a port that is alive
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		return ln
	}
	t.Run("closed", func(t *testing.T) {
		ln := listen(t)
		addr := ln.Addr().String()
		_ = ln.Close()
		if !PortRefuses(addr) {
			t.Fatal("a closed port was not found refused")
		}
	})
	t.Run("closing a moment after the hangup", func(t *testing.T) {
		// The close must come within PortRefuses' window. A loaded machine
		// can run the timer after the window; such a try tested nothing
		// and is made again. A PortRefuses that does not keep trying
		// returns before the close every time, and fails.
		for try := 1; ; try++ {
			ln := listen(t)
			addr := ln.Addr().String()
			timer := time.AfterFunc(60*time.Millisecond, func() { _ = ln.Close() }) // the dying process's teardown
			if PortRefuses(addr) {
				return
			}
			if !timer.Stop() {
				t.Fatal("a port closed 60 ms after the hangup was not found refused")
			}
			if try == 3 {
				t.Fatalf("PortRefuses returned before a close 60 ms after the hangup, %d times out of %d", try, try)
			}
		}
	})
	t.Run("open", func(t *testing.T) {
		ln := listen(t)
		start := time.Now()
		if PortRefuses(ln.Addr().String()) {
			t.Fatal("an open port was found refused")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("an open port took %v to judge; want about %v", took, portProbeWindow)
		}
	})
}
