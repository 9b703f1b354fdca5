package node

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/ringkv/ringkv/replica"
)

// Errors the API handlers translate into Connect codes in apiError.
var (
	errKeyNotFound = errors.New("key not found")
	// errNoRoute: the partition's leader is not known here yet, or the node it
	// was forwarded to could not serve it; retried until the request timeout.
	errNoRoute = errors.New("no route to the partition's leader")
)

// Response header naming the client address of the partition's leader on a
// "not leader" answer, so clients can go there directly.
const headerLeader = "Ringkv-Leader"

// Request header marking a request one node forwarded to another; such a
// request is never forwarded again.
const headerForwarded = "Ringkv-Forwarded"

// Error metadata saying the node refused the request before executing any of
// it (not leader, no route), so a write that got it was certainly not applied.
const headerRefused = "Ringkv-Refused"

// refused builds an Unavailable error for a request that was not executed.
func (n *Node) refused(err error, leaderClientAddr string) *connect.Error {
	ce := connect.NewError(connect.CodeUnavailable, err)
	ce.Meta().Set(headerRefused, "true")
	if leaderClientAddr != "" {
		ce.Meta().Set(headerLeader, leaderClientAddr)
	}
	return ce
}

var errNotFound = errKeyNotFound

func invalidArg(format string, a ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, a...))
}

// apiError turns an internal error into the Connect error a client sees: a
// code it can act on and a message that says what happened.
func (n *Node) apiError(err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		return ce
	}
	switch {
	case errors.Is(err, errKeyNotFound):
		return connect.NewError(connect.CodeNotFound, errKeyNotFound)
	case errors.Is(err, replica.ErrNotLeader), errors.Is(err, replica.ErrNoLeader):
		leader := ""
		if nl, ok := errors.AsType[*replica.NotLeaderError](err); ok && nl.LeaderID != "" {
			if m, ok := n.member(nl.LeaderID); ok {
				leader = m.Meta.ClientAddr
			}
		}
		return n.refused(err, leader)
	case errors.Is(err, errNoRoute):
		return n.refused(err, "")
	case errors.Is(err, replica.ErrOutcomeUnknown):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, replica.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, errors.New("node is shutting down"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	n.log.Error("request failed", "error", err)
	return connect.NewError(connect.CodeInternal, err)
}
