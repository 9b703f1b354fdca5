package transport

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringkv/ringkv/internal/tcptest"
)

func TestDialAcceptRoutesByPartition(t *testing.T) {
	pids := []uint32{0, 1, 7, 63, math.MaxUint32}
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	from, to := map[uint32]*Layer{}, map[uint32]*Layer{}
	for _, p := range pids {
		from[p], to[p] = mustListen(t, a, p), mustListen(t, b, p)
	}

	// Dial every partition at once, then check each Accept got the
	// connection that was dialed for its own partition.
	var wg sync.WaitGroup
	dialed := make([]net.Conn, len(pids))
	errs := make([]error, len(pids))
	for i, p := range pids {
		wg.Go(func() {
			c, err := from[p].Dial(b.Addr().String(), waitLimit)
			if err == nil {
				_, err = fmt.Fprintf(c, "hello %010d", p)
			}
			dialed[i], errs[i] = c, err
		})
	}
	accepted := map[uint32]net.Conn{}
	for _, p := range pids {
		r := waitAccept(t, acceptAsync(to[p]))
		if r.err != nil {
			t.Fatalf("Accept(%d): %v", p, r.err)
		}
		t.Cleanup(func() { _ = r.c.Close() })
		accepted[p] = r.c
	}
	wg.Wait()

	for i, p := range pids {
		t.Run(fmt.Sprint("partition ", p), func(t *testing.T) {
			if errs[i] != nil {
				t.Fatalf("Dial: %v", errs[i])
			}
			t.Cleanup(func() { _ = dialed[i].Close() })
			buf := make([]byte, len("hello 0000000000"))
			_ = accepted[p].SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := io.ReadFull(accepted[p], buf); err != nil {
				t.Fatalf("read: %v", err)
			}
			if want := fmt.Sprintf("hello %010d", p); string(buf) != want {
				t.Fatalf("partition %d accepted %q, want %q", p, buf, want)
			}
			exchange(t, dialed[i], accepted[p], strings.Repeat("raft", 1000))
			if got := to[p].Addr().String(); got != b.Addr().String() {
				t.Fatalf("Layer.Addr = %s, want %s", got, b.Addr())
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	b := newTestMux(t, nil)
	mustListen(t, b, 1)
	mustListen(t, b, 5) // registered, but nobody calls Accept

	a := newTestMux(t, nil)
	a1, a5, a42 := mustListen(t, a, 1), mustListen(t, a, 5), mustListen(t, a, 42)
	other := newTestMux(t, func(c *Config) { c.ClusterID = "other-cluster" })
	o1 := mustListen(t, other, 1)
	closed := mustListen(t, a, 9)
	_ = closed.Close()

	silent := tcptest.Serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	http := tcptest.Serve(t, func(c net.Conn) { _, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n") })
	nothing := unusedAddr(t)

	tests := []struct {
		name    string
		from    *Layer
		addr    string
		timeout time.Duration
		want    error
	}{
		{"unknown partition", a42, b.Addr().String(), waitLimit, ErrUnknownPartition},
		{"wrong cluster", o1, b.Addr().String(), waitLimit, ErrWrongCluster},
		{"partition not accepting", a5, b.Addr().String(), 300 * time.Millisecond, ErrHandshakeTimeout},
		{"silent server", a1, silent, 300 * time.Millisecond, ErrHandshakeTimeout},
		{"not a RingKV port", a1, http, waitLimit, ErrBadHeader},
		{"closed layer", closed, b.Addr().String(), waitLimit, ErrClosed},
		{"nothing listening", a1, nothing, waitLimit, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.from.Dial(tt.addr, tt.timeout)
			if err == nil {
				_ = c.Close()
				t.Fatalf("Dial succeeded, want %v", tt.want)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Dial: %v, want %v", err, tt.want)
			}
			t.Logf("error text: %v", err)
		})
	}
}

func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestStalledHandshakesAreCutWithoutBlockingOthers(t *testing.T) {
	// The concurrent handshakes below must end within it, loaded machine
	// or not, for the stalled ones to be still open when checked.
	const timeout = 2 * time.Second
	b := newTestMux(t, func(c *Config) { c.HandshakeTimeout = timeout })
	a := newTestMux(t, nil)

	start := time.Now()
	stalled := map[string]*net.TCPConn{
		"silent":         rawDial(t, b),
		"partial header": rawDial(t, b),
		"partial body":   rawDial(t, b),
	}
	if _, err := stalled["partial header"].Write([]byte("RKV")); err != nil {
		t.Fatal(err)
	}
	if _, err := stalled["partial body"].Write([]byte("RKV1\x01\x0ctest-c")); err != nil {
		t.Fatal(err)
	}

	// While those hang, complete handshakes on several partitions at once.
	var wg sync.WaitGroup
	for p := range uint32(8) {
		from, to := mustListen(t, a, p), mustListen(t, b, p)
		wg.Go(func() {
			d, acc := connect(t, from, to)
			exchange(t, d, acc, "ping")
		})
	}
	wg.Wait()

	for name, c := range stalled {
		if !stillOpen(c) {
			t.Fatalf("%s: stalled connection was closed before the concurrent handshakes finished", name)
		}
	}
	for name, c := range stalled {
		t.Run(name, func(t *testing.T) {
			readClosed(t, c)
			if elapsed := time.Since(start); elapsed < timeout {
				t.Fatalf("cut after %v, before the handshake timeout %v", elapsed, timeout)
			}
		})
	}
}

func TestHandshakeFloodIsShed(t *testing.T) {
	b := newTestMux(t, func(c *Config) { c.HandshakeTimeout = time.Hour })
	b.mu.Lock()
	b.maxHandshakes = 2
	b.mu.Unlock()
	inProgress := func(n int) func() bool {
		return func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.handshakes) == n
		}
	}

	silent1, _ := rawDial(t, b), rawDial(t, b)
	waitFor(t, "two handshakes in progress", inProgress(2))
	readClosed(t, rawDial(t, b)) // over the limit: closed at once, not after an hour

	_ = silent1.Close()
	waitFor(t, "one handshake in progress", inProgress(1))
	a := newTestMux(t, nil)
	d, acc := connect(t, mustListen(t, a, 1), mustListen(t, b, 1))
	exchange(t, d, acc, "below the limit again")
}

func TestGarbageHeaderGetsBadHeader(t *testing.T) {
	b := newTestMux(t, nil)
	a := newTestMux(t, nil)
	from, to := mustListen(t, a, 3), mustListen(t, b, 3)

	tests := []struct {
		name      string
		in        string
		halfClose bool
	}{
		{"wrong magic", "XKV1\x01\x00\x00\x00\x00\x03", false},
		{"http request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"future version", "RKV1\x07\x00\x00\x00\x00\x03", false},
		{"cluster id too long", "RKV1\x01\x41" + strings.Repeat("c", 65) + "\x00\x00\x00\x03", false},
		{"length continuation bit", "RKV1\x01\x80\x01\x00\x00\x00\x03", false},
		{"binary noise", strings.Repeat("\xff", 300), false},
		{"truncated then half-closed", "RKV1\x01\x0ctest", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawDial(t, b)
			if _, err := c.Write([]byte(tt.in)); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				_ = c.CloseWrite()
			}
			_ = c.SetReadDeadline(time.Now().Add(waitLimit))
			var st [1]byte
			if _, err := io.ReadFull(c, st[:]); err != nil {
				t.Fatalf("read status: %v", err)
			}
			if status(st[0]) != statusBadHeader {
				t.Fatalf("status %#x, want bad header %#x", st[0], statusBadHeader)
			}
			readClosed(t, c)

			// The mux keeps serving.
			d, acc := connect(t, from, to)
			exchange(t, d, acc, "still serving")
		})
	}
}

func TestLayerClose(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	from, to := mustListen(t, a, 4), mustListen(t, b, 4)
	dialed, accepted := connect(t, from, to)

	pending := acceptAsync(to)
	if err := to.Close(); err != nil {
		t.Fatalf("Layer.Close: %v", err)
	}

	t.Run("pending Accept returns ErrClosed", func(t *testing.T) {
		if r := waitAccept(t, pending); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("Accept: %v, %v; want ErrClosed", r.c, r.err)
		}
		if _, err := to.Accept(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Accept after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("established connection is closed", func(t *testing.T) {
		readClosed(t, dialed)
		if _, err := accepted.Write([]byte("x")); err == nil {
			t.Fatalf("write on a connection of a closed layer succeeded")
		}
	})
	t.Run("later dials get ErrUnknownPartition", func(t *testing.T) {
		if _, err := from.Dial(b.Addr().String(), waitLimit); !errors.Is(err, ErrUnknownPartition) {
			t.Fatalf("Dial: %v, want ErrUnknownPartition", err)
		}
	})
	t.Run("closed layer cannot dial", func(t *testing.T) {
		if _, err := to.Dial(a.Addr().String(), waitLimit); !errors.Is(err, ErrClosed) {
			t.Fatalf("Dial: %v, want ErrClosed", err)
		}
	})
	t.Run("close is idempotent and does not evict a new layer", func(t *testing.T) {
		again := mustListen(t, b, 4)
		if err := to.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		d, acc := connect(t, from, again)
		exchange(t, d, acc, "re-registered")
	})
	t.Run("closing the dialing layer closes its connections", func(t *testing.T) {
		a7, b7 := mustListen(t, a, 7), mustListen(t, b, 7)
		_, acc := connect(t, a7, b7)
		_ = a7.Close()
		readClosed(t, acc)
	})
}

func TestMuxClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := TestConfig()
	cfg.HandshakeTimeout = time.Hour
	m.cfg = cfg.withDefaults() // a handshake that only Close can end
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()

	l := mustListen(t, m, 2)
	pending := acceptAsync(l)
	peer := newTestMux(t, nil)
	pl := mustListen(t, peer, 2)
	hung := rawDial(t, m)
	// Wait until the mux owns the hung connection, so Close must cut it.
	waitFor(t, "handshake registered", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.handshakes) == 1
	})

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Serve did not return after Close")
	}
	tests := []struct {
		name string
		err  func() error
		want error
	}{
		{"Accept", func() error { return waitAccept(t, pending).err }, ErrClosed},
		{"Listen", func() error { _, err := m.Listen(3); return err }, ErrClosed},
		{"Dial", func() error { _, err := l.Dial(peer.Addr().String(), waitLimit); return err }, ErrClosed},
		{"second Close", m.Close, nil},
		{"second Serve", m.Serve, nil},
		{"dial to closed mux", func() error { _, err := pl.Dial(m.Addr().String(), waitLimit); return err }, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.err(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("hung handshake is cut", func(t *testing.T) { readClosed(t, hung) })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestListenTwice(t *testing.T) {
	m := newTestMux(t, nil)
	l := mustListen(t, m, 8)
	if _, err := m.Listen(8); !errors.Is(err, ErrPartitionRegistered) {
		t.Fatalf("second Listen: %v, want ErrPartitionRegistered", err)
	}
	_ = l.Close()
	mustListen(t, m, 8)
}

func TestSetClusterID(t *testing.T) {
	b := newTestMux(t, func(c *Config) { c.ClusterID = "" })
	a := newTestMux(t, func(c *Config) { c.ClusterID = "c1" })
	from, to := mustListen(t, a, 1), mustListen(t, b, 1)

	if _, err := from.Dial(b.Addr().String(), waitLimit); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("before SetClusterID: %v, want ErrWrongCluster", err)
	}
	b.SetClusterID("c1")
	d, acc := connect(t, from, to)
	exchange(t, d, acc, "same cluster")

	// Flip the id while dials run: every dial ends in success or
	// ErrWrongCluster, and the race detector watches the rest.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b.SetClusterID([]string{"c1", "c2"}[i%2])
		}
	})
	wg.Go(func() {
		for {
			c, err := to.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	})
	for range 20 {
		c, err := from.Dial(b.Addr().String(), waitLimit)
		if err == nil {
			_ = c.Close()
		} else if !errors.Is(err, ErrWrongCluster) {
			t.Errorf("Dial during SetClusterID: %v", err)
		}
	}
	close(stop)
	_ = to.Close()
	wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"zero timeout means default", func(c *Config) { c.HandshakeTimeout = 0 }, ""},
		{"cluster id at limit", func(c *Config) { c.ClusterID = strings.Repeat("x", 64) }, ""},
		{"cluster id over limit", func(c *Config) { c.ClusterID = strings.Repeat("x", 65) }, "limit is 64"},
		{"negative timeout", func(c *Config) { c.HandshakeTimeout = -time.Second }, "negative"},
		{"advertise hostname", func(c *Config) { c.AdvertiseAddr = "node-1:7201" }, ""},
		{"advertise ipv6", func(c *Config) { c.AdvertiseAddr = "[fd00::1]:7201" }, ""},
		{"advertise without port", func(c *Config) { c.AdvertiseAddr = "10.0.0.1" }, "missing port"},
		{"advertise port zero", func(c *Config) { c.AdvertiseAddr = "10.0.0.1:0" }, "non-zero port"},
		{"advertise without host", func(c *Config) { c.AdvertiseAddr = ":7201" }, "needs a host"},
		{"advertise wildcard v4", func(c *Config) { c.AdvertiseAddr = "0.0.0.0:7201" }, "wildcard"},
		{"advertise wildcard v6", func(c *Config) { c.AdvertiseAddr = "[::]:7201" }, "wildcard"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := TestConfig().Validate(); err != nil {
		t.Fatalf("TestConfig().Validate: %v", err)
	}
}

func TestNewMuxAdvertiseAddr(t *testing.T) {
	tests := []struct {
		name      string
		advertise string
		want      string // "" means NewMux must fail
	}{
		{"wildcard listener needs AdvertiseAddr", "", ""},
		{"wildcard listener with AdvertiseAddr", "10.1.2.3:7201", "10.1.2.3:7201"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = ln.Close() }()
			cfg := TestConfig()
			cfg.AdvertiseAddr = tt.advertise
			m, err := NewMux(ln, cfg)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NewMux accepted the unadvertisable address %s", ln.Addr())
				}
				return
			}
			if err != nil {
				t.Fatalf("NewMux: %v", err)
			}
			l := mustListen(t, m, 0)
			if got := l.Addr().String(); got != tt.want {
				t.Fatalf("Layer.Addr = %s, want %s", got, tt.want)
			}
			if got := m.Addr().String(); got != ln.Addr().String() {
				t.Fatalf("Mux.Addr = %s, want the listener's %s", got, ln.Addr())
			}
		})
	}
}

// BenchmarkDialHandshake measures a Dial that completes the handshake
// against a serving Mux, next to a plain TCP connect as the baseline.
func BenchmarkDialHandshake(b *testing.B) {
	b.Run("mux handshake", func(b *testing.B) {
		server, client := newTestMux(b, nil), newTestMux(b, nil)
		to, from := mustListen(b, server, 1), mustListen(b, client, 1)
		go func() {
			for {
				c, err := to.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		benchDial(b, func() (net.Conn, error) { return from.Dial(server.Addr().String(), waitLimit) })
	})
	b.Run("plain tcp baseline", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		benchDial(b, func() (net.Conn, error) { return net.DialTimeout("tcp", ln.Addr().String(), waitLimit) })
	})
}

func benchDial(b *testing.B, dial func() (net.Conn, error)) {
	b.ReportAllocs()
	for b.Loop() {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// TestOnHangup: the hook runs when the peer of an accepted connection hangs
// up, once per connection; not when we close it ourselves, nor for dialed
// connections.
func TestOnHangup(t *testing.T) {
	a, b := newTestMux(t, nil), newTestMux(t, nil)
	from, to := mustListen(t, a, 3), mustListen(t, b, 3)
	hangups := make(chan struct{}, 10)
	to.OnHangup(func() { hangups <- struct{}{} })
	from.OnHangup(func() { t.Error("hangup reported for a dialed connection") })

	// Our own close: a read that fails with net.ErrClosed is not a hangup.
	_, own := connect(t, from, to)
	readDone := make(chan struct{})
	go func() { _, _ = own.Read(make([]byte, 1)); close(readDone) }()
	_ = own.Close()
	<-readDone

	// The peer hangs up: reported once, however often we read after.
	dialed, accepted := connect(t, from, to)
	exchange(t, dialed, accepted, "ping")
	_ = dialed.Close()
	for range 3 {
		if _, err := accepted.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after the peer closed succeeded")
		}
	}
	select {
	case <-hangups:
	case <-time.After(waitLimit):
		t.Fatal("the peer's hangup was not reported")
	}
	select {
	case <-hangups:
		t.Fatal("hangup reported twice (or for our own close)")
	case <-time.After(100 * time.Millisecond):
	}
}
