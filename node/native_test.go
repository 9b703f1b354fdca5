package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/wire"
)

// nativeKVClient dials n's client port with the native protocol.
func nativeKVClient(t *testing.T, n *Node) ringkvv1connect.KVClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wire.Dial(ctx, &net.Dialer{}, n.ClientAddr())
	if err != nil {
		t.Fatalf("native dial of %s: %v", n.Name(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return wire.KVClient(c)
}

// The native protocol serves the same KV service as Connect, on the same
// port: what one writes the other reads, at the same versions, and the
// calls count in the same metrics.
func TestNativeAndConnectShareTheService(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, n := range c.nodes {
		native, viaConnect := nativeKVClient(t, n), kvClient(c.nodes[(i+1)%3])
		key := []byte("native-" + n.Name())
		put, err := native.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: key, Value: []byte("v"),
			RequestId: &ringkvv1.RequestID{ClientId: 11, Seq: uint64(i + 1)}}))
		if err != nil {
			t.Fatalf("native put via %s: %v", n.Name(), err)
		}
		got, err := viaConnect.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: key}))
		if err != nil || string(got.Msg.Value) != "v" || got.Msg.Version != put.Msg.Version {
			t.Fatalf("connect get of a native put: %v, %v; want v at version %d", got, err, put.Msg.Version)
		}
		// An eventual read is served where it arrives, once that replica
		// has applied the put.
		for {
			back, err := native.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: key, Consistency: "eventual"}))
			if err == nil && back.Msg.Receipt.GetServedBy() == n.Name() && back.Msg.Version == put.Msg.Version {
				break
			}
			if ctx.Err() != nil || (err != nil && connect.CodeOf(err) != connect.CodeNotFound) {
				t.Fatalf("native eventual get via %s: %v, %v", n.Name(), back, err)
			}
			time.Sleep(10 * time.Millisecond) // polling, bounded by ctx
		}
		cas, err := native.CompareAndSwap(ctx, connect.NewRequest(&ringkvv1.CompareAndSwapRequest{Key: key, NewValue: []byte("w"),
			Expect: &ringkvv1.CompareAndSwapRequest_ExpectedVersion{ExpectedVersion: put.Msg.Version}}))
		if err != nil || !cas.Msg.Succeeded {
			t.Fatalf("native cas via %s: %v, %v", n.Name(), cas, err)
		}
		del, err := native.Delete(ctx, connect.NewRequest(&ringkvv1.DeleteRequest{Key: key}))
		if err != nil || !del.Msg.Deleted {
			t.Fatalf("native delete via %s: %v, %v", n.Name(), del, err)
		}
		_, err = native.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: key}))
		if ce, ok := err.(*connect.Error); !ok || ce.Code() != connect.CodeNotFound || !connect.IsWireError(err) {
			t.Fatalf("native get of a deleted key: %v; want a not_found wire error", err)
		}
	}
	if m := string(metricsOf(t, c.nodes[0])); !strings.Contains(m, `ringkv_requests_total{code="ok",procedure="/ringkv.v1.KV/CompareAndSwap"}`) {
		t.Fatalf("/metrics does not count the native compare-and-swap:\n%s", grepLines(m, "ringkv_requests_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Frames a client can send that the protocol's own checks refuse: each gets
// an answer that says what was wrong, and the connection and the node keep
// serving.
func TestNativeBadFrames(t *testing.T) {
	c := startCluster(t, 1)
	n := c.nodes[0]
	conn, err := net.Dial("tcp", n.ClientAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte(wire.Preface)); err != nil {
		t.Fatal(err)
	}
	if got := make([]byte, len(wire.Preface)); func() bool { _, err := io.ReadFull(r, got); return err != nil || string(got) != wire.Preface }() {
		t.Fatal("no preface back")
	}
	limit := n.maxRequestBytes()
	for _, tc := range []struct {
		name    string
		method  wire.Method
		payload []byte
		code    connect.Code
		want    string
	}{
		{"undecodable message", wire.MethodPut, []byte{0xff, 0xff, 0xff}, connect.CodeInvalidArgument, "cannot decode the Put request"},
		{"unknown method", wire.Method(99), nil, connect.CodeUnimplemented, "unknown method 99"},
		{"request over the limit", wire.MethodPut, make([]byte, limit+1), connect.CodeResourceExhausted, "the limit is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := binary.BigEndian.AppendUint32(nil, uint32(9+len(tc.payload)))
			frame = binary.BigEndian.AppendUint32(frame, 7)
			frame = append(frame, byte(tc.method))
			frame = binary.BigEndian.AppendUint32(frame, 5000)
			if _, err := conn.Write(append(frame, tc.payload...)); err != nil {
				t.Fatal(err)
			}
			hdr := make([]byte, 9)
			if _, err := io.ReadFull(r, hdr); err != nil {
				t.Fatal(err)
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr)-5)
			if _, err := io.ReadFull(r, body); err != nil {
				t.Fatal(err)
			}
			if id, code := binary.BigEndian.Uint32(hdr[4:]), connect.Code(hdr[8]); id != 7 || code != tc.code || !bytes.Contains(body, []byte(tc.want)) {
				t.Fatalf("answer id %d code %v body %q; want id 7, %v with %q", id, code, body, tc.code, tc.want)
			}
		})
	}
	kv := nativeKVClient(t, n)
	if _, err := kv.Put(context.Background(), connect.NewRequest(&ringkvv1.PutRequest{Key: []byte("k"), Value: []byte("v")})); err != nil {
		t.Fatalf("node stopped serving after bad frames: %v", err)
	}
}

// A request's budget: RequestTimeout, or a little less than the caller's
// deadline when that comes first.
func TestRequestBudget(t *testing.T) {
	n := &Node{cfg: Config{RequestTimeout: 5 * time.Second}}
	for _, tc := range []struct {
		left time.Duration
		has  bool
		want time.Duration
	}{
		{0, false, 5 * time.Second},
		{time.Second, true, 900 * time.Millisecond},
		{2 * time.Second, true, 1800 * time.Millisecond},
		{4 * time.Second, true, 3750 * time.Millisecond}, // the margin stops at 250 ms
		{time.Minute, true, 5 * time.Second},
	} {
		if got := n.requestBudget(tc.left, tc.has); got != tc.want {
			t.Errorf("requestBudget(%v, %v) = %v, want %v", tc.left, tc.has, got, tc.want)
		}
	}
}

// withRetry derives the budget's deadline for a context without one from
// the native server, and leaves a native request's context, which carries
// it already, as it is: one deadline per request.
func TestWithRetryDerivesOneDeadline(t *testing.T) {
	n := &Node{cfg: Config{RequestTimeout: 5 * time.Second}, stop: make(chan struct{})}
	deadlineOf := func(ctx context.Context) (seen context.Context, dl time.Time, ok bool) {
		_ = n.withRetry(ctx, func(ctx context.Context) error {
			seen = ctx
			dl, ok = ctx.Deadline()
			return nil
		})
		return seen, dl, ok
	}

	parent, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	seen, dl, ok := deadlineOf(parent)
	if !ok || seen == parent || dl.Sub(start) > 1850*time.Millisecond {
		t.Fatalf("a Connect-style context with 2s left: the attempt's deadline is %v from the start (set: %v); want about 1.8s", dl.Sub(start), ok)
	}

	native, cancel2 := context.WithTimeout(context.WithValue(context.Background(), budgetedKey{}, true), 2*time.Second)
	defer cancel2()
	if seen, _, _ := deadlineOf(native); seen != native {
		t.Fatal("withRetry derived a second deadline for a native request's context, which has its budget already")
	}

	// The native server gives its requests that budget and that mark.
	cfg := nativeServerConfig(n)
	if got := cfg.Budget(2 * time.Second); got != 1800*time.Millisecond {
		t.Errorf("native server: a 2s timeout gets a budget of %v, want 1.8s", got)
	}
	if got := cfg.Budget(0); got != 5*time.Second {
		t.Errorf("native server: a request without a timeout gets a budget of %v, want RequestTimeout 5s", got)
	}
	if cfg.BaseContext == nil || cfg.BaseContext.Value(budgetedKey{}) == nil {
		t.Error("native server: the handlers' base context lacks the budget mark, so withRetry would derive a second deadline")
	}
}
