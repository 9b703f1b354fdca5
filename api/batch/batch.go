// Package batch serves the KV.Batch call by running each of its operations
// through the KV service's own single-call methods, and turns one
// operation's result back into what a single call would have returned.
//
// Both sides keep the single-call contract: a server that uses Serve
// validates, routes, forwards and deduplicates every operation exactly as it
// would a call of its own, and a client that uses Result sees the same
// response or *connect.Error (code, message, leader hint) it would have seen.
// A batch is therefore not a transaction: its operations run concurrently
// and each succeeds or fails alone.
//
//	func (s kvService) Batch(ctx context.Context, req *connect.Request[ringkvv1.BatchRequest]) (*connect.Response[ringkvv1.BatchResponse], error) {
//		out, err := batch.Serve(ctx, s, req.Msg, nil)
//		if err != nil {
//			return nil, err
//		}
//		return connect.NewResponse(out), nil
//	}
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// MaxOps is the most operations one batch may carry.
const MaxOps = 1024

// LeaderHeader is the error metadata key in which a node names the client
// address of the partition's leader (carried in BatchError.leader).
const LeaderHeader = "Ringkv-Leader"

// Observer, when not nil, is told about every operation once it is answered:
// its single-call procedure name, when it started and its error (nil on
// success). Servers use it to count operations as they count calls.
type Observer func(procedure string, start time.Time, err error)

// Serve runs every operation of req through h, concurrently, and returns
// their results in order. It fails as a whole only when the batch itself is
// invalid (too many operations); an invalid operation gets its own error.
func Serve(ctx context.Context, h ringkvv1connect.KVHandler, req *ringkvv1.BatchRequest, observe Observer) (*ringkvv1.BatchResponse, error) {
	ops := req.GetOps()
	if len(ops) > MaxOps {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("batch has %d operations; the limit is %d", len(ops), MaxOps))
	}
	out := &ringkvv1.BatchResponse{Results: make([]*ringkvv1.BatchResult, len(ops))}
	var wg sync.WaitGroup
	for i, op := range ops {
		if i == len(ops)-1 {
			out.Results[i] = serveOne(ctx, h, i, op, observe)
			break
		}
		wg.Go(func() { out.Results[i] = serveOne(ctx, h, i, op, observe) })
	}
	wg.Wait()
	return out, nil
}

// serveOne answers one operation; a panic in the handler becomes that
// operation's internal error rather than the end of the process.
func serveOne(ctx context.Context, h ringkvv1connect.KVHandler, i int, op *ringkvv1.BatchOp, observe Observer) (res *ringkvv1.BatchResult) {
	start := time.Now()
	proc := ""
	var err error
	defer func() {
		if p := recover(); p != nil {
			err = connect.NewError(connect.CodeInternal, fmt.Errorf("operation %d: %v", i, p))
			res = errorResult(err)
		}
		if observe != nil && proc != "" {
			observe(proc, start, err)
		}
	}()
	if ms := op.GetTimeoutMs(); ms > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	switch o := op.GetOp().(type) {
	case *ringkvv1.BatchOp_Get:
		proc = ringkvv1connect.KVGetProcedure
		var r *connect.Response[ringkvv1.GetResponse]
		if r, err = h.Get(ctx, connect.NewRequest(o.Get)); err == nil {
			return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Get{Get: r.Msg}}
		}
	case *ringkvv1.BatchOp_Put:
		proc = ringkvv1connect.KVPutProcedure
		var r *connect.Response[ringkvv1.PutResponse]
		if r, err = h.Put(ctx, connect.NewRequest(o.Put)); err == nil {
			return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Put{Put: r.Msg}}
		}
	case *ringkvv1.BatchOp_Delete:
		proc = ringkvv1connect.KVDeleteProcedure
		var r *connect.Response[ringkvv1.DeleteResponse]
		if r, err = h.Delete(ctx, connect.NewRequest(o.Delete)); err == nil {
			return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Delete{Delete: r.Msg}}
		}
	case *ringkvv1.BatchOp_CompareAndSwap:
		proc = ringkvv1connect.KVCompareAndSwapProcedure
		var r *connect.Response[ringkvv1.CompareAndSwapResponse]
		if r, err = h.CompareAndSwap(ctx, connect.NewRequest(o.CompareAndSwap)); err == nil {
			return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_CompareAndSwap{CompareAndSwap: r.Msg}}
		}
	default:
		err = connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("operation %d names no operation: set one of get, put, delete or compare_and_swap", i))
	}
	return errorResult(err)
}

// errorResult carries err as a single call would have: its code, message
// and leader hint.
func errorResult(err error) *ringkvv1.BatchResult {
	e := &ringkvv1.BatchError{Code: uint32(connect.CodeOf(err)), Message: err.Error()}
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		e.Message = ce.Message()
		e.Leader = ce.Meta().Get(LeaderHeader)
	}
	return &ringkvv1.BatchResult{Result: &ringkvv1.BatchResult_Error{Error: e}}
}

// Error returns the error a single call would have returned for a result
// that carries one, as a wire *connect.Error with the leader hint in its
// metadata; nil for a success.
func Error(res *ringkvv1.BatchResult) error {
	e := res.GetError()
	if e == nil {
		return nil
	}
	code := connect.Code(e.GetCode())
	if code == 0 || code > connect.CodeUnauthenticated {
		code = connect.CodeUnknown
	}
	ce := connect.NewWireError(code, errors.New(e.GetMessage()))
	if e.GetLeader() != "" {
		ce.Meta().Set(LeaderHeader, e.GetLeader())
	}
	return ce
}
