package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/ringkv/ringkv/partition"
)

// LeaderHeader is the response header in which a node names the client
// address of the partition's leader, when it knows it.
const LeaderHeader = "Ringkv-Leader"

// route says where a request may go.
type route struct {
	kind  routeKind
	key   []byte // routeLeader: the key whose partition leads
	fixed string // routeFixed: the only endpoint
}

// attemptFunc makes one attempt against one endpoint and returns the
// response headers on success.
type attemptFunc func(ctx context.Context, e *endpoint) (http.Header, error)

// verdict is what one failed attempt means for the request.
type verdict struct {
	retry        bool
	maybeApplied bool // the attempt may have reached the log (writes)
	connFailed   bool // quarantine the endpoint
	hint         string
	final        error // when !retry
}

// call is the state of one request across its attempts.
type call struct {
	op           string
	write        bool
	pid          partition.ID
	havePID      bool
	hint         string // endpoint a node named as leader, for the next attempt
	immediate    bool   // the last retry went at once, without a backoff
	maybeApplied bool   // some attempt of a write may have been applied
	last         error
	attempts     int
}

// giveUp builds the error for a request that ran out of attempts or time.
func (s *call) giveUp(cause error) error {
	kind, what := ErrUnavailable, "no node could serve it"
	if s.write && s.maybeApplied {
		kind, what = ErrOutcomeUnknown, "the write may or may not have been applied; read the key to find out"
	}
	msg := fmt.Sprintf("%s: %s (%d attempts", s.op, what, s.attempts)
	if cause != nil {
		msg += ", " + cause.Error()
	}
	msg += ")"
	if s.last != nil {
		msg += "; last error: " + serverMessage(s.last)
	}
	e := newError(kind, errors.Join(cause, s.last), "%s", msg)
	e.Attempts = s.attempts
	return e
}

// do runs fn with retries. op names the request in messages; write marks
// requests whose attempts may be applied (they carry a request id, so
// retrying them is safe).
func (c *Client) do(ctx context.Context, op string, rt route, write bool, fn attemptFunc) error {
	s := &call{op: op, write: write}
	if rt.kind == routeLeader {
		c.refreshRoutesAsync(true)
		s.pid, s.havePID = c.router.partitionOf(rt.key)
	}
	for s.attempts < c.cfg.MaxAttempts {
		if c.closed.Load() {
			if write && s.maybeApplied {
				return s.giveUp(ErrClosed) // an attempt cut off by Close may have been applied
			}
			return newError(ErrClosed, nil, "%s", op)
		}
		if deadlinePassed(ctx) {
			return s.giveUp(ctxCause(ctx))
		}
		ep := c.pick(rt, s)
		s.attempts++
		actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		hdr, err := fn(actx, c.endpoint(ep))
		attemptTimedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			c.router.markGood(ep)
			if h := hdr.Get(LeaderHeader); h != "" && s.havePID {
				c.router.setLeader(s.pid, h)
			}
			return nil
		}
		callerDone := deadlinePassed(ctx)
		// When the caller's deadline ended the attempt, it may have been
		// sent all the same: classify it like a timeout.
		v := classify(err, attemptTimedOut || callerDone, write)
		if !v.retry {
			// A definite answer carries the server's message alone.
			e := v.final.(*Error)
			e.Attempts = s.attempts
			if write && s.maybeApplied && e.Kind == ErrUnavailable {
				e.Kind = ErrOutcomeUnknown // an earlier attempt may have been applied
			}
			return e
		}
		if !callerDone || s.last == nil || connect.IsWireError(err) {
			s.last = err // else keep the more telling error before the deadline
		}
		s.maybeApplied = s.maybeApplied || v.maybeApplied
		if callerDone {
			return s.giveUp(ctxCause(ctx))
		}
		if c.afterFailure(s, ep, v) || s.attempts >= c.cfg.MaxAttempts {
			continue
		}
		if err := sleep(ctx, backoff(c.cfg.BackoffBase, c.cfg.BackoffMax, s.attempts, c.jitter)); err != nil {
			return s.giveUp(err)
		}
	}
	return s.giveUp(nil)
}

// deadlinePassed reports whether the caller's context has ended or its
// deadline has passed. The clock is checked too: ctx.Err() turns non-nil
// only once the context's timer has run, a moment after the deadline, and an
// attempt that failed because the deadline passed (package wire refuses to
// send a call with no time left) must count as ended by the caller.
func deadlinePassed(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ctxCause is why the caller's context ended, for deadlinePassed's callers.
func ctxCause(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// afterFailure updates routing after a retryable failure at ep and reports
// whether the next attempt should go at once (to a fresh leader hint).
func (c *Client) afterFailure(s *call, ep string, v verdict) (now bool) {
	if v.connFailed {
		c.router.markBad(ep)
	}
	c.refreshRoutesAsync(false)
	prev := s.hint
	s.hint = ""
	if v.hint != "" && endpointKey(v.hint) != endpointKey(ep) {
		if s.havePID {
			c.router.setLeader(s.pid, v.hint)
		}
		s.hint = c.router.addr(v.hint)
	}
	c.log.Debug("ringkv: retrying", "op", s.op, "attempt", s.attempts, "endpoint", ep, "err", s.last, "hint", s.hint)
	// A fresh hint is worth trying at once, and so is another node after a
	// connection failure (a node that is down: the next one holds the
	// request and retries it itself while the partition elects a leader).
	// Never twice in a row, so that two nodes naming each other, or a
	// cluster that is all down, cannot make the client spin.
	now = (s.hint != "" && prev == "") || v.connFailed
	now = now && !s.immediate
	s.immediate = now
	return now
}

// pick chooses the endpoint of the next attempt.
func (c *Client) pick(rt route, s *call) string {
	switch {
	case rt.kind == routeFixed:
		return rt.fixed
	case s.hint != "":
		return s.hint
	case rt.kind == routeLeader && s.havePID:
		if l, ok := c.router.leader(s.pid); ok {
			return l
		}
	}
	return c.router.next()
}

// classify decides what a failed attempt means. The caller has already
// handled the end of its own context.
func classify(err error, attemptTimedOut, write bool) verdict {
	if connect.IsWireError(err) {
		ce, _ := errors.AsType[*connect.Error](err)
		msg := serverMessage(err)
		switch ce.Code() {
		case connect.CodeNotFound:
			return verdict{final: newError(ErrNotFound, err, "%s", msg)}
		case connect.CodeInvalidArgument, connect.CodeOutOfRange:
			return verdict{final: newError(ErrInvalidArgument, err, "%s", msg)}
		case connect.CodeFailedPrecondition:
			// Retrying cannot help until an operator changes the cluster.
			return verdict{final: newError(ErrFailedPrecondition, err, "%s", msg)}
		case connect.CodeResourceExhausted:
			// The node refused the request's size before reading it: the
			// same bytes will be refused again.
			return verdict{final: newError(ErrInvalidArgument, err, "request too large: %s", msg)}
		case connect.CodeUnavailable, connect.CodeAborted:
			// The server did not apply it: no leader, no quorum, or
			// overloaded. Another node or a later moment may do better.
			return verdict{retry: true, hint: ce.Meta().Get(LeaderHeader)}
		case connect.CodeDeadlineExceeded:
			// The server proposed the write but could not learn its fate.
			return verdict{retry: true, maybeApplied: write, hint: ce.Meta().Get(LeaderHeader)}
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss, connect.CodeCanceled:
			kind := ErrUnavailable
			if write {
				kind = ErrOutcomeUnknown
			}
			return verdict{final: newError(kind, err, "%s: %s", ce.Code(), msg)}
		default:
			return verdict{final: newError(ErrUnavailable, err, "%s: %s", ce.Code(), msg)}
		}
	}
	if attemptTimedOut {
		return verdict{retry: true, maybeApplied: write, connFailed: true}
	}
	if opErr, ok := errors.AsType[*net.OpError](err); ok && opErr.Op == "dial" {
		// Never connected, so never sent.
		return verdict{retry: true, connFailed: true}
	}
	// The connection broke at an unknown point of the exchange.
	return verdict{retry: true, maybeApplied: write, connFailed: true}
}

// backoff returns the wait before retry number n (n >= 1): uniformly random
// in [0, min(max, base*2^(n-1))). rnd(k) must return a value in [0, k).
func backoff(base, maxWait time.Duration, n int, rnd func(int64) int64) time.Duration {
	ceiling := maxWait
	if n-1 < 62 {
		if c := base << (n - 1); c > 0 && c < maxWait && c>>(n-1) == base {
			ceiling = c
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(ceiling)))
}

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
