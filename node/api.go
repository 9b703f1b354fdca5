package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/replica"
)

// kvService implements the KV API: it validates, routes each request to the
// partition's replica here or forwards it once to the partition's leader.
type kvService struct{ n *Node }

var _ ringkvv1connect.KVHandler = kvService{}

// Consistency names accepted on the wire.
const (
	consistencyStrong   = "strong"
	consistencyEventual = "eventual"
)

func (s kvService) Get(ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	n := s.n
	m := req.Msg
	if err := n.checkKey(m.Key); err != nil {
		return nil, err
	}
	strong := true
	switch m.Consistency {
	case "", consistencyStrong:
	case consistencyEventual:
		strong = false
	default:
		return nil, invalidArg("unknown consistency %q: use %q or %q", m.Consistency, consistencyStrong, consistencyEventual)
	}
	pid := uint32(n.ring.Of(m.Key))
	answer := func(rd replica.Read) (*connect.Response[ringkvv1.GetResponse], error) {
		if !rd.Found {
			return nil, errNotFound
		}
		return connect.NewResponse(&ringkvv1.GetResponse{
			Key: m.Key, Value: rd.Value, Version: rd.Version,
			Receipt: &ringkvv1.ReadReceipt{ServedBy: n.cfg.Name, AppliedIndex: rd.AppliedIndex, Leader: rd.Leader, Partition: pid},
		}), nil
	}
	if !strong {
		// An eventual read that a voter here can serve never waits, so it
		// needs neither the retry loop nor the earlier deadline withRetry
		// derives (a context.WithTimeout per read). Anything else, an
		// error included, takes the loop below.
		if r := n.eventualReplica(pid); r != nil {
			if rd, err := r.ReadEventual(m.Key); err == nil {
				resp, err := answer(rd)
				return resp, n.apiError(err)
			}
		}
	}
	var resp *connect.Response[ringkvv1.GetResponse]
	err := n.withRetry(ctx, func(ctx context.Context) error {
		var r *replica.Replica
		if strong {
			r = n.replica(pid)
		} else {
			r = n.eventualReplica(pid)
		}
		if r == nil || (strong && !r.IsLeader()) {
			out, err := forward(ctx, n, req, pid, !strong, false, func(c ringkvv1connect.KVClient, ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
				return c.Get(ctx, req)
			})
			resp = out
			return err
		}
		var rd replica.Read
		var err error
		if strong {
			rd, err = r.ReadStrong(ctx, m.Key)
		} else {
			rd, err = r.ReadEventual(m.Key)
		}
		if err != nil {
			return err
		}
		resp, err = answer(rd)
		return err
	})
	return resp, n.apiError(err)
}

// eventualReplica returns this node's replica of partition pid if it may
// serve eventual reads, or nil. Only a voter serves them: a replica still
// catching up, or one removed from its group, has nothing to promise.
func (n *Node) eventualReplica(pid uint32) *replica.Replica {
	r := n.replica(pid)
	if r == nil {
		return nil
	}
	if _, voter, _ := r.Membership(); !voter {
		return nil
	}
	return r
}

func (s kvService) Put(ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	m := req.Msg
	if err := s.n.checkKey(m.Key); err != nil {
		return nil, err
	}
	if err := s.n.checkValue(m.Value); err != nil {
		return nil, err
	}
	cmd := raftfsm.Command{Kind: raftfsm.KindPut, Key: m.Key, Value: m.Value}
	setRequestID(&cmd, m.RequestId)
	res, resp, err := proposeOrForward(ctx, s.n, req, cmd, func(c ringkvv1connect.KVClient, ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
		return c.Put(ctx, req)
	})
	if err != nil || resp != nil {
		return resp, err
	}
	return connect.NewResponse(&ringkvv1.PutResponse{Version: res.Version}), nil
}

func (s kvService) Delete(ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
	m := req.Msg
	if err := s.n.checkKey(m.Key); err != nil {
		return nil, err
	}
	cmd := raftfsm.Command{Kind: raftfsm.KindDelete, Key: m.Key}
	setRequestID(&cmd, m.RequestId)
	res, resp, err := proposeOrForward(ctx, s.n, req, cmd, func(c ringkvv1connect.KVClient, ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
		return c.Delete(ctx, req)
	})
	if err != nil || resp != nil {
		return resp, err
	}
	return connect.NewResponse(&ringkvv1.DeleteResponse{Deleted: res.Status == raftfsm.StatusOK, Index: res.Version}), nil
}

func (s kvService) CompareAndSwap(ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
	m := req.Msg
	if err := s.n.checkKey(m.Key); err != nil {
		return nil, err
	}
	if err := s.n.checkValue(m.NewValue); err != nil {
		return nil, err
	}
	cmd := raftfsm.Command{Kind: raftfsm.KindCAS, Key: m.Key, Value: m.NewValue}
	switch e := m.Expect.(type) {
	case *ringkvv1.CompareAndSwapRequest_ExpectedValue:
		if err := s.n.checkValue(e.ExpectedValue); err != nil {
			return nil, err
		}
		cmd.Expect, cmd.ExpectedValue = raftfsm.ExpectValue, e.ExpectedValue
	case *ringkvv1.CompareAndSwapRequest_ExpectedVersion:
		cmd.Expect, cmd.ExpectedVersion = raftfsm.ExpectVersion, e.ExpectedVersion
	case *ringkvv1.CompareAndSwapRequest_ExpectAbsent:
		if !e.ExpectAbsent {
			return nil, invalidArg("expect_absent must be true when set")
		}
		cmd.Expect = raftfsm.ExpectAbsent
	default:
		return nil, invalidArg("compare-and-swap needs one of expected_value, expected_version or expect_absent")
	}
	setRequestID(&cmd, m.RequestId)
	res, resp, err := proposeOrForward(ctx, s.n, req, cmd, func(c ringkvv1connect.KVClient, ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
		return c.CompareAndSwap(ctx, req)
	})
	if err != nil || resp != nil {
		return resp, err
	}
	out := &ringkvv1.CompareAndSwapResponse{Succeeded: res.Status == raftfsm.StatusOK}
	if out.Succeeded {
		out.Version = res.Version
	} else {
		out.CurrentExists, out.CurrentValue, out.CurrentVersion = res.Exists, res.Value, res.Version
	}
	return connect.NewResponse(out), nil
}

func setRequestID(cmd *raftfsm.Command, id *ringkvv1.RequestID) {
	if id == nil {
		return
	}
	cmd.ClientID, cmd.Seq, cmd.AckBelow = id.ClientId, id.Seq, id.AckBelow
}

// proposeOrForward proposes cmd on the local leader of the key's partition,
// or forwards the request to the leader. Exactly one of res (local) or resp
// (forwarded) is set on success.
func proposeOrForward[Req, Resp any](ctx context.Context, n *Node, req *connect.Request[Req], cmd raftfsm.Command,
	call func(ringkvv1connect.KVClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error),
) (raftfsm.Result, *connect.Response[Resp], error) {
	if id := any(req.Msg).(interface{ GetRequestId() *ringkvv1.RequestID }).GetRequestId(); id != nil {
		if id.ClientId == 0 || id.Seq == 0 {
			return raftfsm.Result{}, nil, invalidArg("request_id needs a non-zero client_id and seq")
		}
	}
	pid := uint32(n.ring.Of(cmd.Key))
	var res raftfsm.Result
	var resp *connect.Response[Resp]
	// Once any attempt's outcome is unknown, a failure of the request must
	// say so: that attempt's entry may still commit, even if every later
	// attempt is refused outright.
	uncertain := false
	err := n.withRetry(ctx, func(ctx context.Context) error {
		r := n.replica(pid)
		var err error
		if r == nil || !r.IsLeader() {
			resp, err = forward(ctx, n, req, pid, false, true, call)
		} else {
			var results []raftfsm.Result
			if results, _, err = r.Propose(ctx, []raftfsm.Command{cmd}); err == nil {
				res = results[0]
			}
		}
		if errors.Is(err, replica.ErrOutcomeUnknown) || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
			uncertain = true
		}
		return idempotentRetry(err, cmd)
	})
	if err != nil && uncertain && !errors.Is(err, replica.ErrOutcomeUnknown) {
		err = fmt.Errorf("%w: an earlier attempt may have been applied; the last one failed: %v", replica.ErrOutcomeUnknown, err)
	}
	if err != nil {
		return res, nil, n.apiError(err)
	}
	if resp == nil {
		switch res.Status {
		case raftfsm.StatusOK, raftfsm.StatusNotFound, raftfsm.StatusCompareFailed:
		case raftfsm.StatusStaleRequest:
			return res, nil, connect.NewError(connect.CodeAborted, errors.New("request id is below the client's acknowledged window: a late duplicate of an answered request"))
		default:
			return res, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("state machine rejected the command: %s", res.Err))
		}
	}
	return res, resp, nil
}

// withRetry runs attempt until it succeeds, fails for good, or the request
// timeout ends. Only "no leader yet" and "not leader" are retried here: an
// election or a stale leader hint passes within a few heartbeats.
func (n *Node) withRetry(ctx context.Context, attempt func(context.Context) error) error {
	if ctx.Value(budgetedKey{}) == nil {
		dl, ok := ctx.Deadline()
		ctx2, cancel := context.WithTimeout(ctx, n.requestBudget(time.Until(dl), ok))
		defer cancel()
		ctx = ctx2
	}
	wait := 10 * time.Millisecond
	for {
		err := attempt(ctx)
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-n.stop:
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 200*time.Millisecond)
	}
}

// requestBudget is how long a request may take here: RequestTimeout, and
// when the caller has a deadline (left from now), a little less than that,
// so it hears "unavailable" rather than timing out and having to assume a
// write may have happened. Connect and gRPC carry the caller's deadline,
// as the native protocol carries its timeout.
func (n *Node) requestBudget(left time.Duration, hasDeadline bool) time.Duration {
	budget := n.cfg.RequestTimeout
	if hasDeadline {
		budget = min(budget, left-min(left/10, 250*time.Millisecond))
	}
	return budget
}

// budgetedKey marks the contexts of the native server's requests, whose
// deadline is already requestBudget's (newNativeServer), so withRetry does
// not derive a second one.
type budgetedKey struct{}

func retryable(err error) bool {
	return errors.Is(err, replica.ErrNotLeader) || errors.Is(err, replica.ErrNoLeader) ||
		errors.Is(err, errNoRoute) || errors.Is(err, errRetryWrite)
}

// errRetryWrite marks a write whose outcome is unknown but that carries a
// request id: proposing it again (here or at the new leader) is safe, since
// the state machine answers a repeated request id with the first result.
var errRetryWrite = errors.New("retrying a write with the same request id")

// idempotentRetry makes an outcome-unknown write retryable when it has a
// request id, so a leadership change during a write costs a retry, not an
// "outcome unknown" answer. If the retries run out, the answer is still
// outcome unknown.
func idempotentRetry(err error, cmd raftfsm.Command) error {
	if err != nil && cmd.ClientID != 0 && errors.Is(err, replica.ErrOutcomeUnknown) {
		return fmt.Errorf("%w: %w", errRetryWrite, err)
	}
	return err
}

func (n *Node) checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return invalidArg("key is empty")
	case len(key) > n.cfg.MaxKeySize:
		return invalidArg("key is %d bytes; the limit is %d bytes", len(key), n.cfg.MaxKeySize)
	}
	return nil
}

func (n *Node) checkValue(v []byte) error {
	if len(v) > n.cfg.MaxValueSize {
		return invalidArg("value is %d bytes; the limit is %d bytes", len(v), n.cfg.MaxValueSize)
	}
	return nil
}
