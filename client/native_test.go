package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client/clienttest"
)

// viaConnect reports whether a recorded call came over Connect: Connect
// requests carry HTTP headers, native ones none.
func viaConnect(c clienttest.Call) bool { return c.Header.Get("Content-Type") != "" }

// The KV calls go native by default, over Connect with ProtocolConnect or to
// a node that does not speak the native protocol; the answers are the same.
func TestProtocolChoice(t *testing.T) {
	for _, tc := range []struct {
		name        string
		protocol    Protocol
		connectOnly bool
		wantConnect bool
	}{
		{"native by default", ProtocolNative, false, false},
		{"connect when asked", ProtocolConnect, false, true},
		{"connect with an older node", ProtocolNative, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []clienttest.Option
			if tc.connectOnly {
				opts = append(opts, clienttest.ConnectOnly())
			}
			cl := clienttest.NewCluster(t, 1, 4, opts...)
			c := newTestClient(t, cl.Endpoints(), func(cfg *Config) { cfg.Protocol = tc.protocol })
			ctx := testCtx(t, 10*time.Second)
			v, err := c.Put(ctx, []byte("k"), []byte("v1"))
			if err != nil {
				t.Fatal(err)
			}
			kv, err := c.Get(ctx, []byte("k"))
			if err != nil || string(kv.Value) != "v1" || kv.Version != v || kv.Receipt.ServedBy != cl.Nodes[0].Name {
				t.Fatalf("get = %+v, %v; want v1 at version %d served by %s", kv, err, v, cl.Nodes[0].Name)
			}
			if _, err := c.Get(ctx, []byte("missing")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get of a missing key: %v; want ErrNotFound", err)
			}
			if _, err := c.Put(ctx, make([]byte, clienttest.MaxKeyBytes+1), nil); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("put of an oversized key: %v; want ErrInvalidArgument", err)
			}
			calls := append(cl.Calls(ringkvv1connect.KVPutProcedure), cl.Calls(ringkvv1connect.KVGetProcedure)...)
			if len(calls) != 4 {
				t.Fatalf("the node saw %d KV calls; want 4", len(calls))
			}
			for _, call := range calls {
				if viaConnect(call) != tc.wantConnect {
					t.Fatalf("%s came over Connect: %v; want %v", call.Procedure, viaConnect(call), tc.wantConnect)
				}
			}
		})
	}
}

// A node whose native connection breaks (it stopped) costs the client no
// more than a connection failure over HTTP/2 does: the next attempt goes to
// another node, and the write is answered.
func TestNativeConnectionBreakFailsOver(t *testing.T) {
	cl := clienttest.NewCluster(t, 2, 4)
	cl.SetLeader(0)
	c := newTestClient(t, []string{cl.Nodes[0].Addr, cl.Nodes[1].Addr}, nil)
	ctx := testCtx(t, 10*time.Second)
	if _, err := c.Put(ctx, []byte("k"), []byte("v0")); err != nil { // loads the routes
		t.Fatal(err)
	}
	waitForRoutes(t, c)
	before := len(cl.Nodes[0].Calls(ringkvv1connect.KVPutProcedure))
	if _, err := c.Put(ctx, []byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if n := len(cl.Nodes[0].Calls(ringkvv1connect.KVPutProcedure)); n != before+1 {
		t.Fatalf("node1 (the leader) served %d puts of 2; want the second", n)
	}
	cl.Nodes[0].Stop() // closes the client's native connection to it
	cl.SetLeader(1)
	before = len(cl.Nodes[1].Calls(ringkvv1connect.KVPutProcedure))
	for i := range 3 {
		if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
			t.Fatalf("put %d after node1 stopped: %v", i, err)
		}
	}
	if n := len(cl.Nodes[1].Calls(ringkvv1connect.KVPutProcedure)) - before; n != 3 {
		t.Fatalf("node2 served %d puts; want 3", n)
	}
}

func TestProtocolConfig(t *testing.T) {
	cfg := TestConfig("127.0.0.1:1")
	cfg.Protocol = Protocol(7)
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Validate with Protocol(7): %v; want ErrInvalidArgument", err)
	}
	for _, s := range []string{"native", "connect"} {
		p, err := ParseProtocol(s)
		if err != nil || p.String() != s {
			t.Fatalf("ParseProtocol(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseProtocol("grpc"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ParseProtocol(grpc): %v; want ErrInvalidArgument", err)
	}
}

// Close cuts off native calls in flight: a write among them may have been
// applied, so it says outcome unknown (and closed); a read says closed.
func TestCloseDuringNativeCalls(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	entered := make(chan struct{}, 2)
	cl.SetHook(func(ctx context.Context, _ clienttest.Call) error {
		entered <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	c := newTestClient(t, cl.Endpoints(), func(cfg *Config) { cfg.RequestTimeout = 2 * time.Second })
	ctx := testCtx(t, 20*time.Second)
	putErr, getErr := make(chan error, 1), make(chan error, 1)
	go func() { _, err := c.Put(ctx, []byte("k"), []byte("v")); putErr <- err }()
	go func() { _, err := c.Get(ctx, []byte("k"), WithConsistency(Eventual)); getErr <- err }()
	for range 2 {
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("the calls never reached the node")
		}
	}
	_ = c.Close()
	if err := <-putErr; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
		t.Fatalf("put cut off by Close: %v; want ErrOutcomeUnknown wrapping ErrClosed", err)
	}
	if err := <-getErr; !errors.Is(err, ErrClosed) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("get cut off by Close: %v; want ErrClosed", err)
	}
}
