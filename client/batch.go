package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/ringkv/ringkv/api/batch"
	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// Batching limits. An operation larger than maxBatchedOpBytes goes in a
// call of its own, so that small operations never queue behind a large
// transfer.
const (
	maxBatchBytes     = 1 << 20
	maxBatchedOpBytes = 64 << 10
	batchQueueLen     = 4096
	// unsupportedFor is how long a node that answered Batch with
	// "unimplemented" (an older version) gets single calls before the
	// client tries Batch again.
	unsupportedFor = 10 * time.Second
)

// batcher sends one node's single-key operations in KV.Batch calls. An
// operation waits only while BatchesInFlight batches to that node are
// outstanding; it then leaves together with every operation that queued
// meanwhile. A lone caller's operation leaves at once, so batching adds no
// wait at low load and saves a call per operation at high load. Each
// operation keeps its own deadline, result and error (package batch).
type batcher struct {
	c     *Client
	addr  string
	kv    ringkvv1connect.KVClient
	queue chan *queuedOp
	slots chan struct{} // one token per batch in flight
	start sync.Once

	unsupportedUntil atomic.Int64 // unix nanoseconds
}

// queuedOp is one attempt of one operation, waiting for its batch.
type queuedOp struct {
	op       *ringkvv1.BatchOp
	ctx      context.Context // the attempt's: it has a deadline
	size     int
	answered chan opAnswer // buffered: the batch never waits for the caller
}

// opAnswer is what came back for one operation. single means the node does
// not serve Batch: send the operation as a call of its own.
type opAnswer struct {
	res    *ringkvv1.BatchResult
	err    error
	single bool
}

func newBatcher(c *Client, addr string, kv ringkvv1connect.KVClient) *batcher {
	return &batcher{
		c:     c,
		addr:  addr,
		kv:    kv,
		queue: make(chan *queuedOp, batchQueueLen),
		slots: make(chan struct{}, c.cfg.BatchesInFlight),
	}
}

// errBadBatch marks a Batch answer that does not fit its request: the
// operations' fate is unknown, as for a broken connection.
var errBadBatch = errors.New("malformed batch answer")

// do sends op in a batch and returns its result and the error a single
// call would have returned. ok is false when op must go as a single call:
// batching is off, op is large, or the node does not serve Batch.
func (b *batcher) do(ctx context.Context, op *ringkvv1.BatchOp) (res *ringkvv1.BatchResult, err error, ok bool) {
	if b.c.cfg.BatchOps <= 1 || time.Now().UnixNano() < b.unsupportedUntil.Load() {
		return nil, nil, false
	}
	size := proto.Size(op)
	if size > maxBatchedOpBytes {
		return nil, nil, false
	}
	if b.c.closed.Load() {
		return nil, newError(ErrClosed, nil, "client closed"), true
	}
	b.start.Do(func() {
		b.c.bg.Add(1)
		go b.run()
	})
	q := &queuedOp{op: op, ctx: ctx, size: size, answered: make(chan opAnswer, 1)}
	select {
	case b.queue <- q:
	case <-ctx.Done():
		return nil, ctx.Err(), true // never sent
	}
	select {
	case a := <-q.answered:
		if a.single {
			return nil, nil, false
		}
		return a.res, a.err, true
	case <-ctx.Done():
		return nil, ctx.Err(), true
	}
}

// run forms batches until the Client closes. Operations still queued then
// are answered "client closed" without being sent.
func (b *batcher) run() {
	defer b.c.bg.Done()
	done := b.c.bgCtx.Done()
	for {
		var first *queuedOp
		select {
		case first = <-b.queue:
		case <-done:
			b.closeQueue()
			return
		}
		select {
		case b.slots <- struct{}{}:
		case <-done:
			first.answered <- opAnswer{err: newError(ErrClosed, nil, "client closed")}
			b.closeQueue()
			return
		}
		// Sends outlive Close on purpose: requests in flight finish their
		// current attempt.
		go b.send(b.collect(first))
	}
}

func (b *batcher) closeQueue() {
	for {
		select {
		case q := <-b.queue:
			q.answered <- opAnswer{err: newError(ErrClosed, nil, "client closed")}
		default:
			return
		}
	}
}

// collect adds to first the operations already queued, within the limits.
// Operations whose caller has given up are dropped unsent.
func (b *batcher) collect(first *queuedOp) []*queuedOp {
	ops := []*queuedOp{first}
	size := first.size
	for len(ops) < b.c.cfg.BatchOps && size < maxBatchBytes {
		select {
		case q := <-b.queue:
			if q.ctx.Err() != nil {
				continue
			}
			ops = append(ops, q)
			size += q.size
		default:
			return ops
		}
	}
	return ops
}

// send makes one Batch call for ops and answers each of them.
func (b *batcher) send(ops []*queuedOp) {
	defer func() { <-b.slots }()
	req := &ringkvv1.BatchRequest{Ops: make([]*ringkvv1.BatchOp, len(ops))}
	var last time.Time
	now := time.Now()
	for i, q := range ops {
		dl, ok := q.ctx.Deadline()
		if !ok { // every attempt has one (RequestTimeout); be safe all the same
			dl = now.Add(b.c.cfg.RequestTimeout)
		}
		if dl.After(last) {
			last = dl
		}
		// Rounded up, so that the node's copy of the deadline is never
		// earlier than the caller's, and never 0 (which means "none").
		q.op.TimeoutMs = uint32(max(1, (dl.Sub(now)+time.Millisecond-1)/time.Millisecond))
		req.Ops[i] = q.op
	}
	ctx, cancel := context.WithDeadline(context.Background(), last)
	defer cancel()
	resp, err := b.kv.Batch(ctx, connect.NewRequest(req))
	switch {
	case err != nil && connect.IsWireError(err) && connect.CodeOf(err) == connect.CodeUnimplemented:
		b.unsupportedUntil.Store(time.Now().Add(unsupportedFor).UnixNano())
		b.c.log.Debug("ringkv: node does not serve Batch; sending single calls", "endpoint", b.addr)
		for _, q := range ops {
			q.answered <- opAnswer{single: true}
		}
		return
	case err == nil && len(resp.Msg.GetResults()) != len(ops):
		err = fmt.Errorf("%w: %d results for %d operations", errBadBatch, len(resp.Msg.GetResults()), len(ops))
	}
	for i, q := range ops {
		if err != nil {
			q.answered <- opAnswer{err: err}
			continue
		}
		res := resp.Msg.GetResults()[i]
		q.answered <- opAnswer{res: res, err: batch.Error(res)}
	}
}

// The single-key operations, batched when the batcher takes them and sent
// as calls of their own when it does not. A batched success has no response
// headers: nodes put the leader hint only on errors.

func (e *endpoint) get(ctx context.Context, req *ringkvv1.GetRequest) (*ringkvv1.GetResponse, http.Header, error) {
	if res, err, ok := e.batch.do(ctx, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: req}}); ok {
		return batched(res, err, (*ringkvv1.BatchResult).GetGet)
	}
	return unary(e.kv.Get(ctx, connect.NewRequest(req)))
}

func (e *endpoint) put(ctx context.Context, req *ringkvv1.PutRequest) (*ringkvv1.PutResponse, http.Header, error) {
	if res, err, ok := e.batch.do(ctx, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: req}}); ok {
		return batched(res, err, (*ringkvv1.BatchResult).GetPut)
	}
	return unary(e.kv.Put(ctx, connect.NewRequest(req)))
}

func (e *endpoint) delete(ctx context.Context, req *ringkvv1.DeleteRequest) (*ringkvv1.DeleteResponse, http.Header, error) {
	if res, err, ok := e.batch.do(ctx, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Delete{Delete: req}}); ok {
		return batched(res, err, (*ringkvv1.BatchResult).GetDelete)
	}
	return unary(e.kv.Delete(ctx, connect.NewRequest(req)))
}

func (e *endpoint) compareAndSwap(ctx context.Context, req *ringkvv1.CompareAndSwapRequest) (*ringkvv1.CompareAndSwapResponse, http.Header, error) {
	if res, err, ok := e.batch.do(ctx, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_CompareAndSwap{CompareAndSwap: req}}); ok {
		return batched(res, err, (*ringkvv1.BatchResult).GetCompareAndSwap)
	}
	return unary(e.kv.CompareAndSwap(ctx, connect.NewRequest(req)))
}

// batched unpacks one batched operation's answer; a success of the wrong
// kind is a malformed answer.
func batched[T any](res *ringkvv1.BatchResult, err error, get func(*ringkvv1.BatchResult) *T) (*T, http.Header, error) {
	if err != nil {
		return nil, nil, err
	}
	if out := get(res); out != nil {
		return out, nil, nil
	}
	return nil, nil, fmt.Errorf("%w: result of the wrong kind (%T)", errBadBatch, res.GetResult())
}

func unary[T any](resp *connect.Response[T], err error) (*T, http.Header, error) {
	if err != nil {
		return nil, nil, err
	}
	return resp.Msg, resp.Header(), nil
}
