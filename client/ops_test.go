package client

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client/clienttest"
)

func TestDrainUndrainAndPlan(t *testing.T) {
	cl := clienttest.NewCluster(t, 4, 8)
	cl.SetReplicationFactor(3)
	c := newTestClient(t, cl.Endpoints(), nil)
	ctx := testCtx(t, 10*time.Second)

	plan, err := c.Plan(ctx)
	if err != nil || len(plan.GetPartitions()) != 8 || plan.GetMoving() != 0 || plan.GetMovesPlanned() != 0 {
		t.Fatalf("Plan of a settled cluster = %v, %v; want 8 partitions, nothing moving", plan, err)
	}
	if err := c.Drain(ctx, "node2"); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if !cl.Draining(1) {
		t.Fatal("node2 is not marked draining")
	}
	members, err := c.Members(ctx)
	if err != nil || !members[1].GetDraining() || members[0].GetDraining() {
		t.Fatalf("Members = %v, %v; want node2 alone draining", members, err)
	}
	plan, err = c.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hosted := 0
	for _, p := range plan.GetPartitions() {
		if slices.Contains(p.GetDesired(), "node2") {
			t.Fatalf("partition %d still wants the draining node2: %v", p.GetId(), p)
		}
		if slices.Contains(p.GetVoters(), "node2") {
			hosted++
			if !p.GetMoving() || p.GetNext() == "" {
				t.Fatalf("partition %d on node2 is not moving: %v", p.GetId(), p)
			}
		}
	}
	if hosted == 0 || plan.GetMoving() != uint32(hosted) || plan.GetMovesPlanned() != uint32(hosted) {
		t.Fatalf("plan totals %v; want %d moving and planned (the partitions on node2)", plan, hosted)
	}
	if err := c.Undrain(ctx, "node2"); err != nil {
		t.Fatalf("Undrain: %v", err)
	}
	if cl.Draining(1) {
		t.Fatal("node2 is still draining after Undrain")
	}
	undrains := 0
	for _, call := range cl.Calls(ringkvv1connect.ClusterDrainProcedure) {
		if m := call.Msg.(*ringkvv1.DrainRequest); m.GetNode() != "node2" {
			t.Fatalf("drain request %v; want node2", m)
		} else if m.GetUndrain() {
			undrains++
		}
	}
	if n := len(cl.Calls(ringkvv1connect.ClusterDrainProcedure)); n != 2 || undrains != 1 {
		t.Fatalf("%d drain calls, %d of them undrains; want one of each", n, undrains)
	}
}

func TestRemove(t *testing.T) {
	cl := clienttest.NewCluster(t, 3, 4)
	cl.SetMemberStatus(2, "dead")
	c := newTestClient(t, cl.Endpoints()[:1], nil)
	by, err := c.Remove(testCtx(t, 10*time.Second), "node3")
	if err != nil || !slices.Equal(by, []string{"node1", "node2"}) {
		t.Fatalf("Remove = %v, %v; want recorded by node1, node2", by, err)
	}
	if !cl.Removed(2) {
		t.Fatal("node3 is not marked removed")
	}
}

func TestOpsRefusalsAreNotRetried(t *testing.T) {
	tests := []struct {
		name  string
		call  func(context.Context, *Client) error
		want  error
		text  string
		calls int // requests that reach the cluster
	}{
		{"remove an alive node", func(ctx context.Context, c *Client) error { _, err := c.Remove(ctx, "node2"); return err },
			ErrFailedPrecondition, "node node2 is alive: drain it (kvctl drain node2 --wait), stop it, then remove it", 1},
		{"remove an unknown node", func(ctx context.Context, c *Client) error { _, err := c.Remove(ctx, "n9"); return err },
			ErrNotFound, `no member named "n9"`, 1},
		{"drain a dead node", func(ctx context.Context, c *Client) error { return c.Drain(ctx, "node3") },
			ErrFailedPrecondition, "node node3 is dead: only a running node can be drained", 1},
		{"undrain an unknown node", func(ctx context.Context, c *Client) error { return c.Undrain(ctx, "n9") },
			ErrNotFound, `no member named "n9"`, 1},
		{"drain without a name", func(ctx context.Context, c *Client) error { return c.Drain(ctx, "") },
			ErrInvalidArgument, "no node name", 0},
		{"remove without a name", func(ctx context.Context, c *Client) error { _, err := c.Remove(ctx, ""); return err },
			ErrInvalidArgument, "no node name", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := clienttest.NewCluster(t, 3, 4)
			cl.SetMemberStatus(2, "dead")
			// node1 answers: a node refuses to remove itself.
			c := newTestClient(t, cl.Endpoints()[:1], nil)
			err := tc.call(testCtx(t, 10*time.Second), c)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v; want %v with %q", err, tc.want, tc.text)
			}
			if e, ok := errors.AsType[*Error](err); tc.calls > 0 && (!ok || !strings.HasPrefix(e.Message, tc.text)) {
				t.Fatalf("err = %#v; want a message that starts with %q (the server's, verbatim)", err, tc.text)
			}
			got := len(cl.Calls(ringkvv1connect.ClusterDrainProcedure)) + len(cl.Calls(ringkvv1connect.ClusterRemoveProcedure))
			if got != tc.calls {
				t.Fatalf("%d calls reached the cluster, want %d (refusals are not retried)", got, tc.calls)
			}
		})
	}
}

func TestOpsRetryUnavailable(t *testing.T) {
	cl := clienttest.NewCluster(t, 2, 4)
	var failures atomic.Int32
	cl.SetHook(func(_ context.Context, call clienttest.Call) error {
		if call.Procedure != ringkvv1connect.ClusterPartitionsProcedure && failures.Add(1) <= 2 {
			return connect.NewError(connect.CodeUnavailable, errors.New("forwarding failed"))
		}
		return nil
	})
	c := newTestClient(t, cl.Endpoints(), nil)
	ctx := testCtx(t, 10*time.Second)
	if err := c.Drain(ctx, "node1"); err != nil {
		t.Fatalf("Drain after two unavailable answers: %v", err)
	}
	if got := len(cl.Calls(ringkvv1connect.ClusterDrainProcedure)); got != 3 {
		t.Fatalf("%d drain attempts, want 3", got)
	}
	failures.Store(0)
	if _, err := c.Plan(ctx); err != nil {
		t.Fatalf("Plan after two unavailable answers: %v", err)
	}
}
