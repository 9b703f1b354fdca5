package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/partition"
)

// Drain marks a node ineligible for replicas (or undoes it). The mark lives
// in the drained node's own data dir and gossip metadata, so the request is
// forwarded to that node.
func (s clusterService) Drain(ctx context.Context, req *connect.Request[ringkvv1.DrainRequest]) (*connect.Response[ringkvv1.DrainResponse], error) {
	n := s.n
	name := req.Msg.Node
	if name == "" {
		return nil, invalidArg("drain needs a node name")
	}
	if name != n.cfg.Name {
		m, ok := n.member(name)
		switch {
		case !ok:
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no member named %q (see kvctl members)", name))
		case req.Header().Get(headerForwarded) != "":
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("drain forwarded to the wrong node"))
		}
		// Ask the node even if gossip says it is gone: a node that just
		// restarted is alive before every peer has heard so.
		fr := connect.NewRequest(req.Msg)
		fr.Header().Set(headerForwarded, n.cfg.Name)
		resp, err := n.fwd.cluster(m.Meta.ClientAddr).Drain(ctx, fr)
		if err != nil && m.Status != membership.StatusAlive && !connect.IsWireError(err) {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("node %s is %s and did not answer: only a running node can be drained; use kvctl remove %s for a node that is gone", name, m.Status, name))
		}
		return resp, err
	}
	draining := !req.Msg.Undrain
	if err := n.updateIdentity(func(id *identity) { id.Draining = draining }); err != nil {
		return nil, n.apiError(err)
	}
	if err := n.gossip.UpdateMeta(n.meta()); err != nil {
		return nil, n.apiError(err)
	}
	n.log.Info("drain state changed", "draining", draining)
	return connect.NewResponse(&ringkvv1.DrainResponse{Node: name, Draining: draining}), nil
}

// Remove declares a node gone for good. Every alive node records it (in its
// data dir) and treats the node as ineligible at once, so its replicas are
// replaced without waiting for --dead-timeout.
func (s clusterService) Remove(ctx context.Context, req *connect.Request[ringkvv1.RemoveRequest]) (*connect.Response[ringkvv1.RemoveResponse], error) {
	n := s.n
	name := req.Msg.Node
	switch m, ok := n.member(name); {
	case name == "":
		return nil, invalidArg("remove needs a node name")
	case !ok:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no member named %q (see kvctl members)", name))
	case (name == n.cfg.Name || m.Status == membership.StatusAlive) && !req.Msg.LocalOnly:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("node %s is alive: drain it (kvctl drain %s --wait), stop it, then remove it through another node", name, name))
	}
	if err := n.updateIdentity(func(id *identity) {
		if !slices.Contains(id.Removed, name) {
			id.Removed = append(id.Removed, name)
		}
	}); err != nil {
		return nil, n.apiError(err)
	}
	out := &ringkvv1.RemoveResponse{RecordedBy: []string{n.cfg.Name}}
	if !req.Msg.LocalOnly {
		var mu sync.Mutex
		n.fanOut(ctx, func(ctx context.Context, m membership.Member, c ringkvv1connect.ClusterClient) {
			_, err := c.Remove(ctx, connect.NewRequest(&ringkvv1.RemoveRequest{Node: name, LocalOnly: true}))
			if err != nil {
				n.log.Warn("peer did not record removal", "peer", m.Meta.Name, "removed", name, "error", err)
				return
			}
			mu.Lock()
			out.RecordedBy = append(out.RecordedBy, m.Meta.Name)
			mu.Unlock()
		})
		slices.Sort(out.RecordedBy)
	}
	n.log.Info("node declared removed", "removed", name)
	return connect.NewResponse(out), nil
}

// Plan shows, for the current membership, what the cluster would do next. It
// changes nothing.
func (s clusterService) Plan(ctx context.Context, _ *connect.Request[ringkvv1.PlanRequest]) (*connect.Response[ringkvv1.PlanResponse], error) {
	parts, err := s.Partitions(ctx, connect.NewRequest(&ringkvv1.PartitionsRequest{}))
	if err != nil {
		return nil, err
	}
	out := &ringkvv1.PlanResponse{}
	for _, p := range s.n.planView(parts.Msg.Partitions) {
		pp := &ringkvv1.PartitionPlan{
			Id: uint32(p.Partition), Desired: p.Desired, Voters: p.Actual.Voters, Nonvoters: p.Actual.Nonvoters,
			Leader: p.Actual.Leader, Blocked: p.Blocked, Moving: p.Moving, UnderReplicated: p.UnderReplicated,
		}
		if p.Next != nil {
			pp.Next = p.Next.Kind.String() + " " + p.Next.Node
			out.MovesPlanned++
		}
		if p.Moving {
			out.Moving++
		}
		if p.UnderReplicated {
			out.UnderReplicated++
		}
		out.Partitions = append(out.Partitions, pp)
	}
	return connect.NewResponse(out), nil
}

// planView runs the planner over reported partitions (indexed by id in the
// result). Catch-up progress is not known here, so nonvoters show as
// catching up.
func (n *Node) planView(parts []*ringkvv1.Partition) []partition.PartitionPlan {
	actual := map[partition.ID]partition.Replicas{}
	for _, p := range parts {
		a := partition.Replicas{Leader: p.Leader, Voters: p.Voters, Nonvoters: p.Nonvoters}
		if len(p.Voters) == 0 && len(p.Nonvoters) == 0 {
			a.Voters = p.Replicas
		}
		actual[partition.ID(p.Id)] = a
	}
	return partition.Plan(n.planInput(actual))
}
