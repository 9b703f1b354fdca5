package transport

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// asyncCall is one SendAsync: its answer and how often done ran.
type asyncCall struct {
	resp  raft.AppendEntriesResponse
	runs  atomic.Int32
	errCh chan error // done's first error (nil on success)
}

// sendCallback queues req with SendAsync; then is run inside done, after
// the outcome is recorded (nil: nothing).
func sendCallback(t *testing.T, h *Heartbeats, pid uint32, addr string, req *raft.AppendEntriesRequest, then func()) *asyncCall {
	t.Helper()
	c := &asyncCall{resp: staleResponse, errCh: make(chan error, 1)}
	err := h.SendAsync(pid, addr, req, &c.resp, func(err error) {
		if c.runs.Add(1) == 1 {
			c.errCh <- err
		}
		if then != nil {
			then()
		}
	})
	if err != nil {
		t.Fatalf("SendAsync(partition %d, %s): %v", pid, describeRequest(*req), err)
	}
	return c
}

func (c *asyncCall) wait(t *testing.T) error {
	t.Helper()
	return recvWithin(t, c.errCh, "SendAsync's done did not run")
}

// SendAsync delivers like Send: done runs once, with the follower's exact
// answer written over whatever resp held, and it may send again from done
// (it runs with no lock of the channel held).
func TestHeartbeatsSendAsync(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1, 2)

	for _, req := range []*raft.AppendEntriesRequest{leaderHeartbeat(1, 3), emptyAppend(2, 4, 9)} {
		pid := uint32(1)
		if !IsHeartbeat(req) {
			pid = 2
		}
		c := sendCallback(t, a.hb, pid, b.addr, req, nil)
		if err := c.wait(t); err != nil {
			t.Fatalf("SendAsync(partition %d, %s): done got %v", pid, describeRequest(*req), err)
		}
		if want := wantAnswer(pid, req); !reflect.DeepEqual(c.resp, *want) {
			t.Fatalf("SendAsync(partition %d, %s) answered\n %+v\nwant %+v", pid, describeRequest(*req), c.resp, *want)
		}
	}

	// A chain of sends, each queued from the previous one's done.
	const chain = 5
	var runs [chain]atomic.Int32
	results := make(chan error, chain)
	var next func(i int)
	next = func(i int) {
		var resp raft.AppendEntriesResponse
		err := a.hb.SendAsync(1, b.addr, leaderHeartbeat(1, uint64(10+i)), &resp, func(err error) {
			runs[i].Add(1)
			results <- err
			if i+1 < chain {
				next(i + 1)
			}
		})
		if err != nil {
			results <- err
		}
	}
	next(0)
	for i := range chain {
		if err := recvWithin(t, results, fmt.Sprintf("the chain of sends from done stopped after %d of %d", i, chain)); err != nil {
			t.Fatalf("send %d of the chain: %v", i, err)
		}
	}

	// done ran exactly once for each, also after the channel closed.
	if err := a.hb.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range runs {
		if n := runs[i].Load(); n != 1 {
			t.Fatalf("done of send %d ran %d times, want once", i, n)
		}
	}
}

// A failure reaches done once; what cannot be queued at all is an error from
// SendAsync itself, and done never runs.
func TestHeartbeatsSendAsyncFailures(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const timeout = 300 * time.Millisecond
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout }))
	b := newHBNode(t, testHBConfig(nil))
	g := newGate(t)
	serveFollower(t, b.hb, g, 1)

	never := func(error) { t.Error("done ran for a request SendAsync refused") }
	var resp raft.AppendEntriesResponse
	if err := a.hb.SendAsync(1, b.addr, &raft.AppendEntriesRequest{}, &resp, never); err == nil {
		t.Fatal("SendAsync of an append without a term: nil error, want a refusal")
	}

	// Unanswered: the timeout.
	held := sendCallback(t, a.hb, 1, b.addr, leaderHeartbeat(1, 1), nil)
	if err := held.wait(t); err == nil || !strings.Contains(err.Error(), "not answered") {
		t.Fatalf("SendAsync to a stuck follower: done got %v, want a \"not answered\" error", err)
	}
	g.waitEntered(t)
	g.release()

	// A peer without the channel: the first call fails through done, later
	// ones at once, without done.
	old := newTestMux(t, nil)
	first := sendCallback(t, a.hb, 1, old.Addr().String(), leaderHeartbeat(1, 2), nil)
	if err := first.wait(t); !errors.Is(err, ErrHeartbeatsUnsupported) {
		t.Fatalf("SendAsync to a peer without the channel: done got %v, want ErrHeartbeatsUnsupported", err)
	}
	if err := a.hb.SendAsync(1, old.Addr().String(), leaderHeartbeat(1, 3), &resp, never); !errors.Is(err, ErrHeartbeatsUnsupported) {
		t.Fatalf("second SendAsync to that peer: %v, want ErrHeartbeatsUnsupported at once", err)
	}

	// Closing fails what is in flight, through done.
	g2 := newGate(t)
	c := newHBNode(t, testHBConfig(nil))
	serveFollower(t, c.hb, g2, 1)
	inFlight := sendCallback(t, a.hb, 1, c.addr, leaderHeartbeat(1, 4), nil)
	g2.waitEntered(t)
	if err := a.hb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inFlight.wait(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("SendAsync in flight at Close: done got %v, want ErrClosed", err)
	}
	if err := a.hb.SendAsync(1, c.addr, leaderHeartbeat(1, 5), &resp, never); !errors.Is(err, ErrClosed) {
		t.Fatalf("SendAsync after Close: %v, want ErrClosed at once", err)
	}
	g2.release()
	for name, call := range map[string]*asyncCall{"timed out": held, "unsupported": first, "closed": inFlight} {
		if n := call.runs.Load(); n != 1 {
			t.Fatalf("done of the %s send ran %d times, want once", name, n)
		}
	}
}
