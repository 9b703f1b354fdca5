package client

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// Drain marks node as draining: it takes no new replicas, and the leaders
// of its partitions move its replicas and leaderships to other nodes. The
// mark spreads by gossip and survives restarts. Drain returns once the mark
// is set, not when the node is empty: poll Partitions (or Plan) for that.
// Draining a node that is not alive fails with ErrFailedPrecondition, an
// unknown name with ErrNotFound. Drain is idempotent.
func (c *Client) Drain(ctx context.Context, node string) error {
	return c.drain(ctx, "drain", node, false)
}

// Undrain reverses Drain: node becomes eligible for replicas again, and the
// cluster moves replicas back as the desired placement says. It is
// idempotent.
func (c *Client) Undrain(ctx context.Context, node string) error {
	return c.drain(ctx, "undrain", node, true)
}

func (c *Client) drain(ctx context.Context, op, node string, undrain bool) error {
	if node == "" {
		return newError(ErrInvalidArgument, nil, "%s: no node name given", op)
	}
	req := &ringkvv1.DrainRequest{Node: node, Undrain: undrain}
	// Setting a flag twice is harmless, so it is retried like a read.
	return c.do(ctx, op, route{kind: routeAny}, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Drain(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Header(), nil
	})
}

// Remove declares node gone for good: every alive node records it, and the
// leaders of its partitions replace its replicas at once instead of waiting
// for the dead timeout. It returns the nodes that recorded the removal. The
// cluster refuses to remove an alive node (ErrFailedPrecondition, whose
// message says to drain and stop it first); an unknown name is ErrNotFound.
// Remove is idempotent.
func (c *Client) Remove(ctx context.Context, node string) (recordedBy []string, err error) {
	if node == "" {
		return nil, newError(ErrInvalidArgument, nil, "remove: no node name given")
	}
	req := &ringkvv1.RemoveRequest{Node: node}
	err = c.do(ctx, "remove", route{kind: routeAny}, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Remove(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		recordedBy = resp.Msg.GetRecordedBy()
		return resp.Header(), nil
	})
	if err != nil {
		return nil, err
	}
	return recordedBy, nil
}

// Plan returns what the cluster would do now, as the answering node sees
// it: per partition the desired replicas, the actual voters and nonvoters,
// the next configuration step and what blocks it, with totals. It changes
// nothing.
func (c *Client) Plan(ctx context.Context) (*ringkvv1.PlanResponse, error) {
	var out *ringkvv1.PlanResponse
	err := c.do(ctx, "plan", route{kind: routeAny}, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Plan(ctx, connect.NewRequest(&ringkvv1.PlanRequest{}))
		if err != nil {
			return nil, err
		}
		out = resp.Msg
		return resp.Header(), nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
