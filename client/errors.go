package client

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
)

// Sentinel errors. Every error a Client method returns for a failed request
// wraps exactly one of them (test with errors.Is); the returned error's text
// carries the server's reason, or the last failure seen when retries ran out.
// Failures the cluster reports with another code (internal errors, for
// example) wrap the underlying *connect.Error instead.
var (
	// ErrNotFound: the key does not exist, or (Drain, Undrain, Remove) no
	// member has the node name given. Never retried.
	ErrNotFound = errors.New("ringkv: not found")
	// ErrUnavailable: no node could serve the request before the attempts or
	// the caller's context ran out (no leader, no quorum, nodes unreachable).
	// For a write it means the write was certainly not applied. Retry later.
	ErrUnavailable = errors.New("ringkv: unavailable")
	// ErrInvalidArgument: the request breaks a rule (a size limit, a missing
	// key, an unknown option); the message names the rule. Never retried.
	ErrInvalidArgument = errors.New("ringkv: invalid argument")
	// ErrOutcomeUnknown: a write may or may not have been applied. An attempt
	// timed out or lost its connection after it was sent, and no retry got a
	// definite answer before the attempts or the caller's context ran out.
	// Read the key to find out; retrying the same operation through a new
	// call is a new write.
	ErrOutcomeUnknown = errors.New("ringkv: outcome unknown")
	// ErrFailedPrecondition: the cluster refused the request in its current
	// state, for example removing a node that is still alive or draining one
	// that is dead; the message says what to do first. Never retried.
	ErrFailedPrecondition = errors.New("ringkv: failed precondition")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("ringkv: client closed")
)

// Error is the concrete type of the errors that wrap a sentinel. Reach it
// with errors.AsType[*client.Error] for the server's message alone.
type Error struct {
	// Kind is the sentinel this error wraps.
	Kind error
	// Message is the server's reason, or a description of the last failure.
	Message string
	// Attempts is how many attempts were made (0 when none was).
	Attempts int
	cause    error
}

// Error returns the sentinel's text followed by the message.
func (e *Error) Error() string {
	if e.Message == "" {
		return e.Kind.Error()
	}
	return e.Kind.Error() + ": " + e.Message
}

// Unwrap exposes the sentinel and the underlying cause (a *connect.Error, a
// transport error or the context's error) to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	if e.cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.cause}
}

func newError(kind error, cause error, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...), cause: cause}
}

// serverMessage is the text a server put in a Connect error, without the
// code prefix that connect.Error.Error adds.
func serverMessage(err error) string {
	if ce, ok := errors.AsType[*connect.Error](err); ok {
		if m := ce.Message(); m != "" {
			return m
		}
		return ce.Code().String()
	}
	return err.Error()
}
