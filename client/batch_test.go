package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client/clienttest"
)

// gateKey is the key whose Get a gate holds at the node.
const gateKey = "gate"

// gate holds the Get of gateKey inside the node until opened. With
// BatchesInFlight 1 that batch takes the only slot, so the operations
// started meanwhile queue, and leave together once it is answered.
type gate struct {
	entered     chan struct{}
	release     chan struct{}
	enterOnce   sync.Once
	releaseOnce sync.Once
}

// newGate returns a gate that opens at the latest when the test ends
// (before the fake nodes stop, which waits for their handlers).
func newGate(t *testing.T) *gate {
	t.Helper()
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.releaseOnce.Do(func() { close(g.release) }) }

// waitEntered waits until the gate holds a Get.
func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	eventually(t, "the gate batch to reach the node", func() bool {
		select {
		case <-g.entered:
			return true
		default:
			return false
		}
	})
}

// hook holds the Get of gateKey and passes every call on to next (nil:
// none).
func (g *gate) hook(next clienttest.Hook) clienttest.Hook {
	return func(ctx context.Context, call clienttest.Call) error {
		if m, ok := call.Msg.(*ringkvv1.GetRequest); ok && string(m.GetKey()) == gateKey {
			g.enterOnce.Do(func() { close(g.entered) })
			select {
			case <-g.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if next != nil {
			return next(ctx, call)
		}
		return nil
	}
}

// eventually polls cond until it holds, failing the test after 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling, bounded by the deadline above
	}
}

// queueLen is how many operations wait in the batcher of addr, not
// counting the one its loop holds while it waits for a slot.
func queueLen(c *Client, addr string) int { return len(c.endpoint(addr).batch.queue) }

// runGated runs ops concurrently while g holds the only batch slot to addr,
// opens the gate once all of them are queued, and returns their errors and
// the gate Get's. The cluster must hold gateKey and use g's hook; c must
// have BatchesInFlight 1 and at least two ops.
func runGated(t *testing.T, c *Client, addr string, g *gate, ops []func(context.Context) error) (errs []error, gateErr error) {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	gateDone := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, []byte(gateKey))
		gateDone <- err
	}()
	g.waitEntered(t)
	errs = make([]error, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Go(func() { errs[i] = op(ctx) })
	}
	// The batcher's loop, idle since it sent the gate batch, takes the
	// first operation straight from the channel and waits for a slot; the
	// others stay in the channel.
	eventually(t, fmt.Sprintf("%d operations to queue behind the gate", len(ops)), func() bool {
		return queueLen(c, addr) == len(ops)-1
	})
	g.open()
	wg.Wait()
	return errs, <-gateDone
}

// batches returns the operations of every Batch call in calls.
func batches(calls []clienttest.Call) [][]*ringkvv1.BatchOp {
	var out [][]*ringkvv1.BatchOp
	for _, c := range calls {
		if m, ok := c.Msg.(*ringkvv1.BatchRequest); ok {
			out = append(out, m.GetOps())
		}
	}
	return out
}

func batchSizes(calls []clienttest.Call) []int {
	var out []int
	for _, ops := range batches(calls) {
		out = append(out, len(ops))
	}
	return out
}

// opKey is the key of a batched operation.
func opKey(op *ringkvv1.BatchOp) string {
	switch o := op.GetOp().(type) {
	case *ringkvv1.BatchOp_Get:
		return string(o.Get.GetKey())
	case *ringkvv1.BatchOp_Put:
		return string(o.Put.GetKey())
	case *ringkvv1.BatchOp_Delete:
		return string(o.Delete.GetKey())
	case *ringkvv1.BatchOp_CompareAndSwap:
		return string(o.CompareAndSwap.GetKey())
	}
	return ""
}

// callsFor counts the operations in calls (single or batched; a Batch
// call itself names no key) whose request names key.
func callsFor(calls []clienttest.Call, key []byte) int {
	n := 0
	for _, c := range calls {
		m, ok := c.Msg.(interface{ GetKey() []byte })
		if ok && bytes.Equal(m.GetKey(), key) {
			n++
		}
	}
	return n
}

func TestConcurrentOpsShareABatch(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	g := newGate(t)
	cl.SetHook(g.hook(nil))
	cl.Set([]byte(gateKey), []byte("open"))
	for i := range 4 {
		cl.Set(fmt.Appendf(nil, "g%d", i), fmt.Appendf(nil, "value %d", i))
	}
	cl.Set([]byte("del"), []byte("x"))
	cl.Set([]byte("cas"), []byte("old"))
	c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
		cfg.BatchesInFlight = 1
		cfg.RequestTimeout = 5 * time.Second
	})

	var ops []func(context.Context) error
	wantKeys := map[string]bool{}
	for i := range 4 {
		key, want := fmt.Appendf(nil, "g%d", i), fmt.Sprintf("value %d", i)
		wantKeys[string(key)] = true
		ops = append(ops, func(ctx context.Context) error {
			kv, err := c.Get(ctx, key)
			if err != nil || string(kv.Value) != want || !bytes.Equal(kv.Key, key) {
				return fmt.Errorf("Get(%s) = %q, %v; want %q", key, kv.Value, err, want)
			}
			return nil
		})
	}
	versions := make([]uint64, 3)
	for i := range versions {
		key := fmt.Appendf(nil, "p%d", i)
		wantKeys[string(key)] = true
		ops = append(ops, func(ctx context.Context) (err error) {
			versions[i], err = c.Put(ctx, key, fmt.Appendf(nil, "new %d", i))
			return err
		})
	}
	wantKeys["del"], wantKeys["absent"], wantKeys["cas"] = true, true, true
	ops = append(ops,
		func(ctx context.Context) error {
			if deleted, err := c.Delete(ctx, []byte("del")); err != nil || !deleted {
				return fmt.Errorf("Delete(del) = %v, %v; want true", deleted, err)
			}
			return nil
		},
		func(ctx context.Context) error {
			if deleted, err := c.Delete(ctx, []byte("absent")); err != nil || deleted {
				return fmt.Errorf("Delete(absent) = %v, %v; want false", deleted, err)
			}
			return nil
		},
		func(ctx context.Context) error {
			if res, err := c.CompareAndSwap(ctx, []byte("cas"), IfValue([]byte("old")), []byte("swapped")); err != nil || !res.Succeeded {
				return fmt.Errorf("CAS(cas) = %+v, %v; want success", res, err)
			}
			return nil
		},
	)

	errs, gateErr := runGated(t, c, cl.Nodes[0].Addr, g, ops)
	if gateErr != nil {
		t.Fatalf("gate Get: %v", gateErr)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("op %d: %v", i, err)
		}
	}
	for i, v := range versions {
		got, _ := cl.Value(fmt.Appendf(nil, "p%d", i))
		if want := fmt.Sprintf("new %d", i); string(got) != want || v == 0 {
			t.Errorf("p%d = %q at version %d; want %q at a version", i, got, v, want)
		}
	}
	if versions[0] == versions[1] || versions[1] == versions[2] || versions[0] == versions[2] {
		t.Errorf("versions %v; each Put must get its own", versions)
	}
	if v, _ := cl.Value([]byte("cas")); string(v) != "swapped" {
		t.Errorf("cas = %q; want swapped", v)
	}

	got := batches(cl.Calls(ringkvv1connect.KVBatchProcedure))
	if sizes := batchSizes(cl.Calls(ringkvv1connect.KVBatchProcedure)); len(sizes) != 2 || sizes[0] != 1 || sizes[1] != len(ops) {
		t.Fatalf("Batch calls carried %v operations; want [1 %d]: the gate, then everything queued behind it", sizes, len(ops))
	}
	for _, op := range got[1] {
		if !wantKeys[opKey(op)] {
			t.Fatalf("unexpected operation %v in the second batch", op)
		}
		delete(wantKeys, opKey(op))
	}
	if len(wantKeys) != 0 {
		t.Fatalf("operations on %v missing from the second batch", wantKeys)
	}
}

func TestLoneCallerIsNotDelayed(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
		// A batcher that waited for company (or for its deadline) would
		// take seconds per operation.
		cfg.RequestTimeout = 5 * time.Second
	})
	ctx := testCtx(t, 30*time.Second)
	var kinds []string
	for i := range 3 {
		key := fmt.Appendf(nil, "k%d", i)
		steps := []struct {
			kind string
			run  func() error
		}{
			{"put", func() error { _, err := c.Put(ctx, key, []byte("v")); return err }},
			{"get", func() error { _, err := c.Get(ctx, key); return err }},
			{"cas", func() error { _, err := c.CompareAndSwap(ctx, key, IfValue([]byte("v")), []byte("w")); return err }},
			{"delete", func() error { _, err := c.Delete(ctx, key); return err }},
		}
		for _, s := range steps {
			start := time.Now()
			if err := s.run(); err != nil {
				t.Fatalf("%s %s: %v", s.kind, key, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("%s %s took %v; a lone operation must leave at once", s.kind, key, d)
			}
			kinds = append(kinds, s.kind)
		}
	}
	got := batches(cl.Calls(ringkvv1connect.KVBatchProcedure))
	if len(got) != len(kinds) {
		t.Fatalf("%d Batch calls for %d sequential operations; want one each", len(got), len(kinds))
	}
	for i, ops := range got {
		var kind string
		switch ops[0].GetOp().(type) {
		case *ringkvv1.BatchOp_Put:
			kind = "put"
		case *ringkvv1.BatchOp_Get:
			kind = "get"
		case *ringkvv1.BatchOp_CompareAndSwap:
			kind = "cas"
		case *ringkvv1.BatchOp_Delete:
			kind = "delete"
		}
		if len(ops) != 1 || kind != kinds[i] {
			t.Fatalf("Batch call %d carried %v; want the %s alone", i, ops, kinds[i])
		}
	}
}

func TestMixedOutcomesInOneBatch(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	g := newGate(t)
	cl.SetHook(g.hook(nil))
	cl.Set([]byte(gateKey), []byte("open"))
	cl.Set([]byte("present"), []byte("here"))
	c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
		cfg.BatchesInFlight = 1
		cfg.RequestTimeout = 5 * time.Second
	})
	longKey := bytes.Repeat([]byte("k"), 5000)
	tests := []struct {
		name string
		key  []byte
		run  func(context.Context) error
		want error // nil: success
		text string
	}{
		{"get of a missing key", []byte("missing"), func(ctx context.Context) error {
			_, err := c.Get(ctx, []byte("missing"))
			return err
		}, ErrNotFound, "key not found"},
		{"put of a key over the limit", longKey, func(ctx context.Context) error {
			_, err := c.Put(ctx, longKey, []byte("v"))
			return err
		}, ErrInvalidArgument, "key is 5000 bytes"},
		{"delete of an empty key", nil, func(ctx context.Context) error {
			_, err := c.Delete(ctx, nil)
			return err
		}, ErrInvalidArgument, "key is empty"},
		{"good put", []byte("fresh"), func(ctx context.Context) error {
			_, err := c.Put(ctx, []byte("fresh"), []byte("v"))
			return err
		}, nil, ""},
		{"good get", []byte("present"), func(ctx context.Context) error {
			kv, err := c.Get(ctx, []byte("present"))
			if err == nil && string(kv.Value) != "here" {
				return fmt.Errorf("value %q, want here", kv.Value)
			}
			return err
		}, nil, ""},
	}
	var ops []func(context.Context) error
	for _, tc := range tests {
		ops = append(ops, tc.run)
	}
	errs, gateErr := runGated(t, c, cl.Nodes[0].Addr, g, ops)
	if gateErr != nil {
		t.Fatalf("gate Get: %v", gateErr)
	}
	if sizes := batchSizes(cl.Calls(ringkvv1connect.KVBatchProcedure)); len(sizes) != 2 || sizes[1] != len(ops) {
		t.Fatalf("Batch calls carried %v operations; want [1 %d]", sizes, len(ops))
	}
	for i, tc := range tests {
		err := errs[i]
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		} else if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: err = %v; want %v with %q", tc.name, err, tc.want, tc.text)
		} else if e, _ := errors.AsType[*Error](err); e == nil || e.Attempts != 1 {
			t.Errorf("%s: err = %#v; want a definite answer after 1 attempt", tc.name, err)
		}
		// Definite answers are not retried: each operation reached the
		// node once.
		if served := callsFor(cl.Calls(""), tc.key); served != 1 {
			t.Errorf("%s: served %d times; want once", tc.name, served)
		}
	}
}

func TestBatchedLeaderHint(t *testing.T) {
	cl := clienttest.NewCluster(t, 2, 8)
	c := newTestClient(t, cl.Endpoints()[:1], func(cfg *Config) {
		// A backoff would outlast the context: only an immediate retry to
		// the hinted leader can succeed.
		cfg.BackoffBase, cfg.BackoffMax = time.Hour, time.Hour
	})
	c.jitter = func(n int64) int64 { return n - 1 }
	ctx := testCtx(t, 5*time.Second)
	if _, err := c.Partitions(ctx); err != nil { // table: node1 leads
		t.Fatal(err)
	}
	// Leadership moves to node2; node1 says so in the operation's own
	// error, inside a successful Batch call.
	cl.SetLeader(1)
	cl.Nodes[0].SetHook(func(_ context.Context, call clienttest.Call) error {
		if call.Procedure == ringkvv1connect.KVPutProcedure {
			return clienttest.NotLeader(cl.Nodes[1].Addr)
		}
		return nil
	})
	for i := range 3 {
		if _, err := c.Put(ctx, []byte("k"), []byte{byte(i)}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	old, leader := cl.Nodes[0], cl.Nodes[1]
	if b, p := len(old.Calls(ringkvv1connect.KVBatchProcedure)), len(old.Calls(ringkvv1connect.KVPutProcedure)); b != 1 || p != 1 {
		t.Fatalf("old leader got %d Batch calls and %d puts; want 1 batched put, then the hint is used", b, p)
	}
	if b, p := len(leader.Calls(ringkvv1connect.KVBatchProcedure)), len(leader.Calls(ringkvv1connect.KVPutProcedure)); b != 3 || p != 3 {
		t.Fatalf("new leader got %d Batch calls and %d puts; want 3 batched puts", b, p)
	}
}

func TestBatchUnimplementedFallsBack(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	cl.SetHook(func(_ context.Context, call clienttest.Call) error {
		if call.Procedure == ringkvv1connect.KVBatchProcedure {
			return connect.NewError(connect.CodeUnimplemented, errors.New("ringkv.v1.KV.Batch is not implemented"))
		}
		return nil
	})
	c := newTestClient(t, cl.Endpoints(), nil)
	ctx := testCtx(t, 10*time.Second)
	checkOps := func(t *testing.T, key []byte) {
		t.Helper()
		if v, err := c.Put(ctx, key, []byte("v")); err != nil || v == 0 {
			t.Fatalf("Put: %d, %v", v, err)
		}
		if kv, err := c.Get(ctx, key); err != nil || string(kv.Value) != "v" {
			t.Fatalf("Get: %+v, %v", kv, err)
		}
		if res, err := c.CompareAndSwap(ctx, key, IfValue([]byte("v")), []byte("w")); err != nil || !res.Succeeded {
			t.Fatalf("CAS: %+v, %v", res, err)
		}
		if deleted, err := c.Delete(ctx, key); err != nil || !deleted {
			t.Fatalf("Delete: %v, %v", deleted, err)
		}
		if _, err := c.Get(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Delete: %v; want ErrNotFound", err)
		}
	}
	start := time.Now()
	checkOps(t, []byte("k1"))
	if got := len(cl.Calls(ringkvv1connect.KVBatchProcedure)); got != 1 {
		t.Fatalf("%d Batch calls; want 1: after Unimplemented the node gets single calls", got)
	}
	if got := callsFor(cl.Calls(""), []byte("k1")); got != 5 {
		t.Fatalf("%d single calls for 5 operations; want 5", got)
	}
	// The node is asked again once unsupportedFor has passed.
	b := c.endpoint(cl.Nodes[0].Addr).batch
	until := time.Unix(0, b.unsupportedUntil.Load())
	if until.Before(start.Add(unsupportedFor)) || until.After(time.Now().Add(unsupportedFor)) {
		t.Fatalf("single calls until %v from the start; want %v", until.Sub(start), unsupportedFor)
	}
	b.unsupportedUntil.Store(time.Now().UnixNano() - 1)
	checkOps(t, []byte("k2"))
	if got := len(cl.Calls(ringkvv1connect.KVBatchProcedure)); got != 2 {
		t.Fatalf("%d Batch calls; want 2: one retry of Batch after the pause", got)
	}
}

// TestBatchOldNodeFallsBack: a node built before KV.Batch existed answers
// it as its generated handler answers any unknown method, with a plain
// HTTP 404, which Connect reports as Unimplemented. The client must fall
// back to single calls there too.
func TestBatchOldNodeFallsBack(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	var refused atomic.Int64
	mux := http.NewServeMux()
	kvPath, kv := ringkvv1connect.NewKVHandler(cl.Nodes[0])
	mux.Handle(kvPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == ringkvv1connect.KVBatchProcedure {
			refused.Add(1)
			http.NotFound(w, r)
			return
		}
		kv.ServeHTTP(w, r)
	}))
	// No Cluster service: the routing table would name the fake node's own
	// address, and every request must come here.
	srv := httptest.NewUnstartedServer(mux)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	srv.Start()
	t.Cleanup(srv.Close)

	c := newTestClient(t, []string{strings.TrimPrefix(srv.URL, "http://")}, nil)
	ctx := testCtx(t, 10*time.Second)
	for i := range 3 {
		key := fmt.Appendf(nil, "k%d", i)
		if _, err := c.Put(ctx, key, []byte("v")); err != nil {
			t.Fatalf("Put to an old node: %v", err)
		}
		if kv, err := c.Get(ctx, key); err != nil || string(kv.Value) != "v" {
			t.Fatalf("Get from an old node: %+v, %v", kv, err)
		}
	}
	if got := refused.Load(); got != 1 {
		t.Fatalf("old node refused %d Batch calls; want 1, then single calls", got)
	}
}

func TestUnbatchedOps(t *testing.T) {
	tests := []struct {
		name        string
		batchOps    int
		value       []byte
		wantBatches int
	}{
		{"batching off", 1, []byte("small"), 0},
		{"large value", 128, bytes.Repeat([]byte("x"), maxBatchedOpBytes+1), 0},
		{"value below the limit", 128, bytes.Repeat([]byte("x"), maxBatchedOpBytes-1024), 1},
		{"small value", 128, []byte("small"), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := clienttest.NewCluster(t, 1, 4)
			c := newTestClient(t, cl.Endpoints(), func(cfg *Config) { cfg.BatchOps = tc.batchOps })
			if _, err := c.Put(testCtx(t, 10*time.Second), []byte("k"), tc.value); err != nil {
				t.Fatal(err)
			}
			if v, _ := cl.Value([]byte("k")); !bytes.Equal(v, tc.value) {
				t.Fatalf("stored %d bytes; want %d", len(v), len(tc.value))
			}
			if got := len(cl.Calls(ringkvv1connect.KVBatchProcedure)); got != tc.wantBatches {
				t.Fatalf("%d Batch calls; want %d", got, tc.wantBatches)
			}
			if got := len(cl.Calls(ringkvv1connect.KVPutProcedure)); got != 1 {
				t.Fatalf("%d Put calls; want 1", got)
			}
		})
	}
}

// TestWholeBatchFailure: a Batch call that hangs (a node that stopped
// answering) fails every operation in it as a timed-out attempt would: a
// write may have been applied, a read is retried on another node.
func TestWholeBatchFailure(t *testing.T) {
	// hang returns a hook under which Batch calls are never answered, not
	// even when the node's copy of the deadline passes (a live node would
	// answer then, and be asked again). Call it after NewCluster: the hook
	// lets go before the nodes stop.
	hang := func(t *testing.T) clienttest.Hook {
		silent := make(chan struct{})
		t.Cleanup(func() { close(silent) })
		return func(_ context.Context, call clienttest.Call) error {
			if call.Procedure == ringkvv1connect.KVBatchProcedure {
				<-silent
				return errors.New("test over")
			}
			return nil
		}
	}
	newClient := func(t *testing.T, cl *clienttest.Cluster) *Client {
		t.Helper()
		c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
			cfg.RequestTimeout = 200 * time.Millisecond
			cfg.MaxAttempts = 2
		})
		if _, err := c.Partitions(testCtx(t, 5*time.Second)); err != nil { // table: node1 leads
			t.Fatal(err)
		}
		return c
	}

	t.Run("write", func(t *testing.T) {
		cl := clienttest.NewCluster(t, 2, 4)
		cl.SetHook(hang(t))
		c := newClient(t, cl)
		_, err := c.Put(testCtx(t, 10*time.Second), []byte("k"), []byte("v"))
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v; a write whose batch was sent and never answered may have been applied", err)
		}
		if e, _ := errors.AsType[*Error](err); e == nil || e.Attempts != 2 {
			t.Fatalf("err = %#v; want both attempts made", err)
		}
		if got := len(cl.Calls(ringkvv1connect.KVBatchProcedure)); got != 2 {
			t.Fatalf("%d Batch calls; want one per attempt", got)
		}
	})
	t.Run("read", func(t *testing.T) {
		cl := clienttest.NewCluster(t, 2, 4)
		cl.Set([]byte("k"), []byte("v"))
		cl.Nodes[0].SetHook(hang(t))
		c := newClient(t, cl)
		kv, err := c.Get(testCtx(t, 10*time.Second), []byte("k"))
		if err != nil || string(kv.Value) != "v" {
			t.Fatalf("Get = %+v, %v; want the value from the other node", kv, err)
		}
		if got := len(cl.Nodes[0].Calls(ringkvv1connect.KVBatchProcedure)); got != 1 {
			t.Fatalf("hung node got %d Batch calls; want 1", got)
		}
		if got := len(cl.Nodes[1].Calls(ringkvv1connect.KVGetProcedure)); got != 1 {
			t.Fatalf("other node served %d gets; want 1", got)
		}
	})
}

func TestBatchOpTimeout(t *testing.T) {
	tests := []struct {
		name           string
		requestTimeout time.Duration
		callerTimeout  time.Duration
		bound          time.Duration // the attempt's deadline, from its start
	}{
		{"request timeout", 400 * time.Millisecond, 10 * time.Second, 400 * time.Millisecond},
		{"caller's deadline", 10 * time.Second, 400 * time.Millisecond, 400 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := clienttest.NewCluster(t, 1, 4)
			c := newTestClient(t, cl.Endpoints(), func(cfg *Config) { cfg.RequestTimeout = tc.requestTimeout })
			ctx := testCtx(t, tc.callerTimeout)
			if _, err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, []byte("k")); err != nil {
				t.Fatal(err)
			}
			got := batches(cl.Calls(ringkvv1connect.KVBatchProcedure))
			if len(got) != 2 {
				t.Fatalf("%d Batch calls; want 2", len(got))
			}
			maxMs := uint32(tc.bound/time.Millisecond) + 1 // rounded up
			for _, ops := range got {
				for _, op := range ops {
					// Well above 0: the node's copy is the attempt's deadline,
					// less only the moments before the batch left.
					if ms := op.GetTimeoutMs(); ms < maxMs/2 || ms > maxMs {
						t.Fatalf("timeout_ms = %d; want in [%d, %d]", ms, maxMs/2, maxMs)
					}
				}
			}
		})
	}
}

func TestCloseAnswersQueuedOps(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	g := newGate(t)
	cl.SetHook(g.hook(nil))
	cl.Set([]byte(gateKey), []byte("open"))
	c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
		cfg.BatchesInFlight = 1
		// Only Close can answer the queued operations in time.
		cfg.RequestTimeout = 20 * time.Second
	})
	ctx := testCtx(t, 30*time.Second)
	gateDone := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, []byte(gateKey))
		gateDone <- err
	}()
	g.waitEntered(t)
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.Put(ctx, fmt.Appendf(nil, "k%d", i), []byte("v"))
			errs <- err
		}()
	}
	eventually(t, "the operations to queue behind the gate", func() bool { return queueLen(c, cl.Nodes[0].Addr) == n-1 })

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	wait := time.NewTimer(5 * time.Second)
	defer wait.Stop()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-wait.C:
		t.Fatal("Close did not return within 5s while a batch was in flight")
	}
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("queued Put: %v; want ErrClosed", err)
			}
		case <-wait.C:
			t.Fatal("queued operations were not answered within 5s of Close")
		}
	}
	// The batch in flight finishes its attempt.
	g.open()
	if err := <-gateDone; err != nil {
		t.Fatalf("Get in flight at Close: %v; want its answer", err)
	}
	for i := range n {
		if _, ok := cl.Value(fmt.Appendf(nil, "k%d", i)); ok {
			t.Fatalf("k%d was written; a queued operation must not be sent after Close", i)
		}
	}
}

func TestConfigValidateBatching(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"no batching", func(c *Config) { c.BatchOps = 1 }, ""},
		{"largest batch", func(c *Config) { c.BatchOps = 1024 }, ""},
		{"one batch in flight", func(c *Config) { c.BatchesInFlight = 1 }, ""},
		{"zero batch ops", func(c *Config) { c.BatchOps = 0 }, "BatchOps is 0"},
		{"negative batch ops", func(c *Config) { c.BatchOps = -1 }, "BatchOps is -1"},
		{"batch ops over the limit", func(c *Config) { c.BatchOps = 1025 }, "BatchOps is 1025"},
		{"zero batches in flight", func(c *Config) { c.BatchesInFlight = 0 }, "BatchesInFlight is 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, base := range []Config{DefaultConfig(), TestConfig("127.0.0.1:1")} {
				tc.edit(&base)
				err := base.Validate()
				if tc.want == "" {
					if err != nil {
						t.Fatalf("Validate: %v", err)
					}
					continue
				}
				if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Validate = %v; want ErrInvalidArgument mentioning %q", err, tc.want)
				}
				if _, err := New(base); err == nil {
					t.Fatal("New accepted an invalid config")
				}
			}
		})
	}
}

// TestCallerDeadlineDuringBatch: when the caller's own deadline ends an
// attempt, the request gives up at once and blames no node, batched or not.
// A batch must not turn the end of its callers' deadlines into a failure of
// the node (quarantine, a retry, a lost last error).
func TestCallerDeadlineDuringBatch(t *testing.T) {
	tests := []struct {
		name     string
		batchOps int
	}{
		{"single calls", 1},
		{"batched", 128},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := clienttest.NewCluster(t, 1, 4)
			// The node never answers (not even when its copy of the
			// deadline passes, as a real node would), so only the
			// client's clocks end the request.
			silent := make(chan struct{})
			t.Cleanup(func() { close(silent) }) // before the node stops
			cl.SetHook(func(_ context.Context, call clienttest.Call) error {
				if call.Procedure == ringkvv1connect.KVBatchProcedure || call.Procedure == ringkvv1connect.KVGetProcedure {
					<-silent
					return errors.New("test over")
				}
				return nil
			})
			c := newTestClient(t, cl.Endpoints(), func(cfg *Config) {
				cfg.BatchOps = tc.batchOps
				cfg.RequestTimeout = 10 * time.Second
			})
			addr := cl.Nodes[0].Addr
			// The timer race this guards against goes either way; a few
			// rounds make a wrong turn all but certain to show.
			for i := range 10 {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
				_, err := c.Get(ctx, []byte("k"))
				cancel()
				if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("round %d: err = %v; want ErrUnavailable wrapping context.DeadlineExceeded", i, err)
				}
				if e, _ := errors.AsType[*Error](err); e == nil || e.Attempts != 1 {
					t.Fatalf("round %d: err = %#v; want 1 attempt", i, err)
				}
				c.router.mu.Lock()
				_, bad := c.router.bad[endpointKey(addr)]
				c.router.mu.Unlock()
				if bad {
					t.Fatalf("round %d: the node was quarantined because the caller's deadline passed (err = %v)", i, err)
				}
			}
		})
	}
}
