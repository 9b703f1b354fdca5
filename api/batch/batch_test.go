package batch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// fakeKV answers every operation with a result derived from its key, so
// that a result shows which operation it belongs to. serve, when set, runs
// first and may fail, block or panic.
type fakeKV struct {
	ringkvv1connect.UnimplementedKVHandler
	serve func(ctx context.Context, procedure string, key []byte) error
}

func (f *fakeKV) enter(ctx context.Context, procedure string, key []byte) error {
	if f.serve == nil {
		return nil
	}
	return f.serve(ctx, procedure, key)
}

func (f *fakeKV) Get(ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	if err := f.enter(ctx, ringkvv1connect.KVGetProcedure, req.Msg.GetKey()); err != nil {
		return nil, err
	}
	return connect.NewResponse(wantResult(getOp(string(req.Msg.GetKey()))).GetGet()), nil
}

func (f *fakeKV) Put(ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	if err := f.enter(ctx, ringkvv1connect.KVPutProcedure, req.Msg.GetKey()); err != nil {
		return nil, err
	}
	return connect.NewResponse(wantResult(putOp(string(req.Msg.GetKey()))).GetPut()), nil
}

func (f *fakeKV) Delete(ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
	if err := f.enter(ctx, ringkvv1connect.KVDeleteProcedure, req.Msg.GetKey()); err != nil {
		return nil, err
	}
	return connect.NewResponse(wantResult(deleteOp(string(req.Msg.GetKey()))).GetDelete()), nil
}

func (f *fakeKV) CompareAndSwap(ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
	if err := f.enter(ctx, ringkvv1connect.KVCompareAndSwapProcedure, req.Msg.GetKey()); err != nil {
		return nil, err
	}
	return connect.NewResponse(wantResult(casOp(string(req.Msg.GetKey()))).GetCompareAndSwap()), nil
}

func getOp(key string) *ringkvv1.BatchOp {
	return &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: &ringkvv1.GetRequest{Key: []byte(key)}}}
}

func putOp(key string) *ringkvv1.BatchOp {
	return &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: &ringkvv1.PutRequest{Key: []byte(key), Value: []byte("v")}}}
}

func deleteOp(key string) *ringkvv1.BatchOp {
	return &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Delete{Delete: &ringkvv1.DeleteRequest{Key: []byte(key)}}}
}

func casOp(key string) *ringkvv1.BatchOp {
	return &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_CompareAndSwap{CompareAndSwap: &ringkvv1.CompareAndSwapRequest{
		Key: []byte(key), Expect: &ringkvv1.CompareAndSwapRequest_ExpectAbsent{ExpectAbsent: true},
	}}}
}

// tag is the number at the end of a key ("k17" -> 17; 0 when none).
func tag(key []byte) uint64 {
	n, _ := strconv.ParseUint(strings.TrimLeft(string(key), "abcdefghijklmnopqrstuvwxyz"), 10, 64)
	return n
}

// wantResult is fakeKV's answer to a successful op.
func wantResult(op *ringkvv1.BatchOp) *ringkvv1.BatchResult {
	switch o := op.GetOp().(type) {
	case *ringkvv1.BatchOp_Get:
		k := o.Get.GetKey()
		return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Get{Get: &ringkvv1.GetResponse{
			Key: k, Value: []byte("value of " + string(k)), Version: tag(k),
		}}}
	case *ringkvv1.BatchOp_Put:
		return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Put{Put: &ringkvv1.PutResponse{Version: 1000 + tag(o.Put.GetKey())}}}
	case *ringkvv1.BatchOp_Delete:
		return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Delete{Delete: &ringkvv1.DeleteResponse{Deleted: true, Index: 2000 + tag(o.Delete.GetKey())}}}
	case *ringkvv1.BatchOp_CompareAndSwap:
		return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_CompareAndSwap{CompareAndSwap: &ringkvv1.CompareAndSwapResponse{
			Succeeded: true, Version: 3000 + tag(o.CompareAndSwap.GetKey()),
		}}}
	}
	return nil
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServeResultsInRequestOrder(t *testing.T) {
	makers := []func(string) *ringkvv1.BatchOp{getOp, putOp, deleteOp, casOp}
	tests := []struct {
		name string
		n    int
	}{
		{"empty batch", 0},
		{"one op", 1},
		{"one of each kind", 4},
		{"many mixed", 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &ringkvv1.BatchRequest{}
			for i := range tc.n {
				req.Ops = append(req.Ops, makers[i%len(makers)](fmt.Sprintf("k%d", i)))
			}
			// Operation i finishes only after operation i+1 has: results
			// placed in completion order would come out reversed.
			done := make([]chan struct{}, tc.n+1)
			for i := range done {
				done[i] = make(chan struct{})
			}
			close(done[tc.n])
			h := &fakeKV{serve: func(ctx context.Context, _ string, key []byte) error {
				i := tag(key)
				defer close(done[i])
				select {
				case <-done[i+1]:
					return nil
				case <-ctx.Done():
					return fmt.Errorf("operation %d: operation %d never finished", i, i+1)
				}
			}}
			out, err := Serve(testCtx(t), h, req, nil)
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
			if len(out.GetResults()) != tc.n {
				t.Fatalf("%d results for %d operations", len(out.GetResults()), tc.n)
			}
			for i, res := range out.GetResults() {
				if want := wantResult(req.Ops[i]); !proto.Equal(res, want) {
					t.Fatalf("result %d = %v; want %v (the answer to operation %d)", i, res, want, i)
				}
				if err := Error(res); err != nil {
					t.Fatalf("Error(result %d) = %v; want nil for a success", i, err)
				}
			}
		})
	}
}

func TestServeOperationErrors(t *testing.T) {
	withLeader := func(code connect.Code, msg, leader string) error {
		ce := connect.NewError(code, errors.New(msg))
		ce.Meta().Set(LeaderHeader, leader)
		return ce
	}
	tests := []struct {
		name       string
		op         *ringkvv1.BatchOp // tried at each position of three
		fail       func() error      // what the handler does for key "bad"
		wantCode   connect.Code
		wantMsg    string // the whole message, or (wantSub) part of it
		wantSub    bool
		wantLeader string
	}{
		{"not found", getOp("bad"), func() error { return connect.NewError(connect.CodeNotFound, errors.New("key not found")) },
			connect.CodeNotFound, "key not found", false, ""},
		{"not leader keeps the hint", putOp("bad"), func() error { return withLeader(connect.CodeUnavailable, "not leader", "10.0.0.7:7101") },
			connect.CodeUnavailable, "not leader", false, "10.0.0.7:7101"},
		{"deadline exceeded with hint", deleteOp("bad"), func() error {
			return withLeader(connect.CodeDeadlineExceeded, "commit not confirmed", "10.0.0.8:7101")
		}, connect.CodeDeadlineExceeded, "commit not confirmed", false, "10.0.0.8:7101"},
		{"invalid argument", casOp("bad"), func() error { return connect.NewError(connect.CodeInvalidArgument, errors.New("value too large")) },
			connect.CodeInvalidArgument, "value too large", false, ""},
		{"plain error is unknown", putOp("bad"), func() error { return errors.New("disk on fire") },
			connect.CodeUnknown, "disk on fire", false, ""},
		{"panic is internal", getOp("bad"), func() error { panic("boom in handler") },
			connect.CodeInternal, "boom in handler", true, ""},
		{"empty op", &ringkvv1.BatchOp{}, nil,
			connect.CodeInvalidArgument, "names no operation", true, ""},
		{"empty op with a timeout", &ringkvv1.BatchOp{TimeoutMs: 100}, nil,
			connect.CodeInvalidArgument, "names no operation", true, ""},
	}
	for _, tc := range tests {
		for pos := range 3 {
			t.Run(fmt.Sprintf("%s/at %d", tc.name, pos), func(t *testing.T) {
				h := &fakeKV{serve: func(_ context.Context, _ string, key []byte) error {
					if string(key) == "bad" {
						return tc.fail()
					}
					return nil
				}}
				req := &ringkvv1.BatchRequest{Ops: []*ringkvv1.BatchOp{getOp("k0"), putOp("k1"), deleteOp("k2")}}
				req.Ops[pos] = tc.op
				out, err := Serve(testCtx(t), h, req, nil)
				if err != nil {
					t.Fatalf("Serve failed as a whole: %v; one operation's error must stay its own", err)
				}
				res := out.GetResults()
				if len(res) != 3 {
					t.Fatalf("%d results for 3 operations", len(res))
				}
				for i := range res {
					if i != pos && !proto.Equal(res[i], wantResult(req.Ops[i])) {
						t.Fatalf("result %d = %v; the other operations must succeed", i, res[i])
					}
				}
				be := res[pos].GetError()
				if be == nil {
					t.Fatalf("result %d = %v; want an error", pos, res[pos])
				}
				if connect.Code(be.GetCode()) != tc.wantCode || be.GetLeader() != tc.wantLeader ||
					(!tc.wantSub && be.GetMessage() != tc.wantMsg) || !strings.Contains(be.GetMessage(), tc.wantMsg) {
					t.Fatalf("BatchError = %v; want code %v, message %q, leader %q", be, tc.wantCode, tc.wantMsg, tc.wantLeader)
				}
				if tc.wantSub && !strings.Contains(be.GetMessage(), fmt.Sprintf("operation %d", pos)) {
					t.Fatalf("message %q does not name operation %d", be.GetMessage(), pos)
				}

				// What the client makes of it: the error a single call gives.
				got := Error(res[pos])
				ce, ok := errors.AsType[*connect.Error](got)
				if !ok || !connect.IsWireError(got) {
					t.Fatalf("Error = %#v; want a wire *connect.Error", got)
				}
				if ce.Code() != tc.wantCode || ce.Message() != be.GetMessage() || ce.Meta().Get(LeaderHeader) != tc.wantLeader {
					t.Fatalf("Error = %v (leader %q); want code %v, message %q, leader %q",
						ce, ce.Meta().Get(LeaderHeader), tc.wantCode, be.GetMessage(), tc.wantLeader)
				}
			})
		}
	}
}

func TestServeTooManyOps(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		wantErr bool
	}{
		{"at the limit", MaxOps, false},
		{"one over", MaxOps + 1, true},
		{"far over", 3 * MaxOps, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var served atomic.Int64
			h := &fakeKV{serve: func(context.Context, string, []byte) error { served.Add(1); return nil }}
			req := &ringkvv1.BatchRequest{}
			for i := range tc.n {
				req.Ops = append(req.Ops, getOp(fmt.Sprintf("k%d", i)))
			}
			out, err := Serve(testCtx(t), h, req, nil)
			if !tc.wantErr {
				if err != nil || len(out.GetResults()) != tc.n || served.Load() != int64(tc.n) {
					t.Fatalf("Serve = %d results, %v (%d served); want all %d", len(out.GetResults()), err, served.Load(), tc.n)
				}
				return
			}
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), strconv.Itoa(MaxOps)) ||
				!strings.Contains(err.Error(), strconv.Itoa(tc.n)) {
				t.Fatalf("Serve error = %v; want InvalidArgument naming the count and the limit %d", err, MaxOps)
			}
			if out != nil || served.Load() != 0 {
				t.Fatalf("Serve returned %v and served %d operations; an oversized batch must be refused whole", out, served.Load())
			}
		})
	}
}

func TestServeOperationTimeout(t *testing.T) {
	tests := []struct {
		name   string
		parent time.Duration // 0: the parent has no deadline
		ms     []uint32      // per operation
	}{
		{"timeout sets the deadline", 0, []uint32{250}},
		{"each operation has its own", 0, []uint32{100, 400, 0}},
		{"zero keeps the parent's", 2 * time.Second, []uint32{0}},
		{"zero and no parent: no deadline", 0, []uint32{0}},
		{"never beyond the parent's", time.Second, []uint32{60_000}},
		{"shorter than the parent's", 10 * time.Second, []uint32{100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			var parentDL time.Time
			if tc.parent > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.parent)
				defer cancel()
				parentDL, _ = ctx.Deadline()
			}
			var mu sync.Mutex
			deadlines := map[uint64]time.Time{}
			h := &fakeKV{serve: func(ctx context.Context, _ string, key []byte) error {
				dl, _ := ctx.Deadline() // zero when none
				mu.Lock()
				defer mu.Unlock()
				deadlines[tag(key)] = dl
				return nil
			}}
			req := &ringkvv1.BatchRequest{}
			for i, ms := range tc.ms {
				op := getOp(fmt.Sprintf("k%d", i))
				op.TimeoutMs = ms
				req.Ops = append(req.Ops, op)
			}
			before := time.Now()
			if _, err := Serve(ctx, h, req, nil); err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			for i, ms := range tc.ms {
				got := deadlines[uint64(i)]
				if ms == 0 {
					if !got.Equal(parentDL) {
						t.Fatalf("op %d (timeout 0): deadline %v; want the parent's (%v)", i, got, parentDL)
					}
					continue
				}
				d := time.Duration(ms) * time.Millisecond
				lo, hi := before.Add(d), after.Add(d)
				if !parentDL.IsZero() {
					lo, hi = earliest(lo, parentDL), earliest(hi, parentDL)
				}
				if got.Before(lo) || got.After(hi) {
					t.Fatalf("op %d (timeout %dms): deadline %v from the start; want within [%v, %v]",
						i, ms, got.Sub(before), lo.Sub(before), hi.Sub(before))
				}
			}
		})
	}
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func TestServeObserver(t *testing.T) {
	type seen struct {
		proc string
		code connect.Code // 0: success
	}
	h := &fakeKV{serve: func(_ context.Context, _ string, key []byte) error {
		switch string(key) {
		case "missing":
			return connect.NewError(connect.CodeNotFound, errors.New("key not found"))
		case "panic":
			panic("boom")
		}
		return nil
	}}
	req := &ringkvv1.BatchRequest{Ops: []*ringkvv1.BatchOp{
		getOp("k0"), putOp("k1"), deleteOp("k2"), casOp("k3"), getOp("missing"), putOp("panic"), {},
	}}
	want := map[seen]int{
		{ringkvv1connect.KVGetProcedure, 0}:                    1,
		{ringkvv1connect.KVPutProcedure, 0}:                    1,
		{ringkvv1connect.KVDeleteProcedure, 0}:                 1,
		{ringkvv1connect.KVCompareAndSwapProcedure, 0}:         1,
		{ringkvv1connect.KVGetProcedure, connect.CodeNotFound}: 1,
		{ringkvv1connect.KVPutProcedure, connect.CodeInternal}: 1,
	}
	var mu sync.Mutex
	got := map[seen]int{}
	var starts []time.Time
	observe := func(proc string, start time.Time, err error) {
		s := seen{proc: proc}
		if err != nil {
			s.code = connect.CodeOf(err)
		}
		mu.Lock()
		defer mu.Unlock()
		got[s]++
		starts = append(starts, start)
	}
	before := time.Now()
	if _, err := Serve(testCtx(t), h, req, observe); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("observed %v; want %v (once per named operation)", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("observed %v; want %v (once per named operation)", got, want)
		}
	}
	for _, s := range starts {
		if s.Before(before) || s.After(after) {
			t.Fatalf("start %v outside the Serve call [%v, %v]", s, before, after)
		}
	}
}

func TestServeRunsOperationsConcurrently(t *testing.T) {
	for _, n := range []int{2, 16} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			// Every operation waits until all have started: run one at a
			// time, the first would wait until the context ends.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var entered atomic.Int64
			all := make(chan struct{})
			h := &fakeKV{serve: func(ctx context.Context, _ string, _ []byte) error {
				if entered.Add(1) == int64(n) {
					close(all)
				}
				select {
				case <-all:
					return nil
				case <-ctx.Done():
					return fmt.Errorf("only %d of %d operations ran at once", entered.Load(), n)
				}
			}}
			req := &ringkvv1.BatchRequest{}
			for i := range n {
				req.Ops = append(req.Ops, putOp(fmt.Sprintf("k%d", i)))
			}
			out, err := Serve(ctx, h, req, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, res := range out.GetResults() {
				if err := Error(res); err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
			}
		})
	}
}

func TestErrorOfResult(t *testing.T) {
	withErr := func(code uint32, msg, leader string) *ringkvv1.BatchResult {
		return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Error{Error: &ringkvv1.BatchError{Code: code, Message: msg, Leader: leader}}}
	}
	tests := []struct {
		name       string
		res        *ringkvv1.BatchResult
		wantNil    bool
		wantCode   connect.Code
		wantLeader string
	}{
		{"success", wantResult(putOp("k1")), true, 0, ""},
		{"nil result", nil, true, 0, ""},
		{"empty result", &ringkvv1.BatchResult{}, true, 0, ""},
		{"zero code", withErr(0, "what happened", ""), false, connect.CodeUnknown, ""},
		{"code past the last", withErr(uint32(connect.CodeUnauthenticated)+1, "from the future", ""), false, connect.CodeUnknown, ""},
		{"huge code", withErr(1<<31, "garbage", ""), false, connect.CodeUnknown, ""},
		{"last code", withErr(uint32(connect.CodeUnauthenticated), "who are you", ""), false, connect.CodeUnauthenticated, ""},
		{"not found", withErr(uint32(connect.CodeNotFound), "key not found", ""), false, connect.CodeNotFound, ""},
		{"leader hint", withErr(uint32(connect.CodeUnavailable), "not leader", "10.1.1.1:7101"), false, connect.CodeUnavailable, "10.1.1.1:7101"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Error(tc.res)
			if tc.wantNil {
				if err != nil {
					t.Fatalf("Error = %v; want nil", err)
				}
				return
			}
			ce, ok := errors.AsType[*connect.Error](err)
			if !ok || !connect.IsWireError(err) {
				t.Fatalf("Error = %#v; want a wire *connect.Error", err)
			}
			if ce.Code() != tc.wantCode || ce.Message() != tc.res.GetError().GetMessage() {
				t.Fatalf("Error = %v; want code %v and message %q", ce, tc.wantCode, tc.res.GetError().GetMessage())
			}
			if got := ce.Meta().Get(LeaderHeader); got != tc.wantLeader {
				t.Fatalf("leader = %q; want %q", got, tc.wantLeader)
			}
		})
	}
}

// TestErrorMatchesSingleCall checks the package's promise: what Error makes
// of a batched operation's failure is what a Connect client gets from the
// same handler error in a call of its own (code, message, leader hint).
func TestErrorMatchesSingleCall(t *testing.T) {
	notLeader := connect.NewError(connect.CodeUnavailable, errors.New("not leader"))
	notLeader.Meta().Set(LeaderHeader, "10.0.0.9:7101")
	tests := []struct {
		name string
		err  error
	}{
		{"connect error", connect.NewError(connect.CodeNotFound, errors.New("key not found"))},
		{"leader hint", notLeader},
		{"plain error", errors.New("disk on fire")},
		{"wrapped connect error", fmt.Errorf("forwarding to node2: %w", connect.NewError(connect.CodeAborted, errors.New("overloaded")))},
		{"deadline exceeded", context.DeadlineExceeded},
		{"canceled", context.Canceled},
		{"wrapped deadline exceeded", fmt.Errorf("waiting for the commit: %w", context.DeadlineExceeded)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeKV{serve: func(context.Context, string, []byte) error { return tc.err }}
			mux := http.NewServeMux()
			mux.Handle(ringkvv1connect.NewKVHandler(h))
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			kv := ringkvv1connect.NewKVClient(srv.Client(), srv.URL)
			_, single := kv.Get(testCtx(t), connect.NewRequest(&ringkvv1.GetRequest{Key: []byte("k")}))

			out, err := Serve(testCtx(t), h, &ringkvv1.BatchRequest{Ops: []*ringkvv1.BatchOp{getOp("k")}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			batched := Error(out.GetResults()[0])

			sce, ok1 := errors.AsType[*connect.Error](single)
			bce, ok2 := errors.AsType[*connect.Error](batched)
			if !ok1 || !ok2 || !connect.IsWireError(single) || !connect.IsWireError(batched) {
				t.Fatalf("single call: %#v; batched: %#v; want wire errors both", single, batched)
			}
			if bce.Code() != sce.Code() || bce.Message() != sce.Message() ||
				bce.Meta().Get(LeaderHeader) != sce.Meta().Get(LeaderHeader) {
				t.Fatalf("batched error %q (code %v, leader %q); a single call gets %q (code %v, leader %q)",
					bce.Message(), bce.Code(), bce.Meta().Get(LeaderHeader),
					sce.Message(), sce.Code(), sce.Meta().Get(LeaderHeader))
			}
		})
	}
}
