package clienttest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// Members lists the fake nodes.
func (n *Node) Members(ctx context.Context, req *connect.Request[ringkvv1.MembersRequest]) (*connect.Response[ringkvv1.MembersResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterMembersProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &ringkvv1.MembersResponse{}
	for _, m := range c.members {
		out.Members = append(out.Members, proto.CloneOf(m))
	}
	return connect.NewResponse(out), nil
}

// Partitions reports every partition's configuration in the model, with the
// planner's verdict (moving, under-replicated).
func (n *Node) Partitions(ctx context.Context, req *connect.Request[ringkvv1.PartitionsRequest]) (*connect.Response[ringkvv1.PartitionsResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterPartitionsProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &ringkvv1.PartitionsResponse{PartitionCount: uint32(len(c.leaders)), ServedBy: n.Name}
	for _, plan := range c.planLocked(false) {
		id := plan.Partition
		start, end := c.Ring.Range(id)
		p := &ringkvv1.Partition{
			Id: uint32(id), HashStart: start, HashEnd: end, Term: 1, AppliedIndex: c.index, CommitIndex: c.index,
			Voters: slices.Clone(c.voters[id]), Nonvoters: slices.Clone(c.nonvoters[id]),
			Moving: plan.Moving, UnderReplicated: plan.UnderReplicated,
		}
		if l := c.leaders[id]; l >= 0 {
			p.Leader, p.LeaderClientAddr = c.Nodes[l].Name, c.Nodes[l].Addr
		}
		add := func(name, suffrage string) {
			d := &ringkvv1.Replica{Node: name, Suffrage: suffrage}
			if i := c.nodeIndex(name); i >= 0 {
				d.ClientAddr = c.Nodes[i].Addr
			}
			p.Replicas = append(p.Replicas, name)
			p.ReplicaDetails = append(p.ReplicaDetails, d)
		}
		for _, v := range c.voters[id] {
			add(v, "voter")
		}
		for _, v := range c.nonvoters[id] {
			add(v, "nonvoter")
		}
		out.Partitions = append(out.Partitions, p)
	}
	return connect.NewResponse(out), nil
}

// Status describes this node.
func (n *Node) Status(ctx context.Context, req *connect.Request[ringkvv1.StatusRequest]) (*connect.Response[ringkvv1.StatusResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterStatusProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	self := c.nodeIndex(n.Name)
	out := &ringkvv1.StatusResponse{
		Node: n.Name, ClusterId: "fake-cluster", PartitionCount: uint32(len(c.leaders)),
		ReplicationFactor: uint32(c.replicas), MembersTotal: uint32(len(c.members)),
		Version: "test", Ready: true, Draining: c.members[self].GetDraining(), RaftBytesSent: c.sent[self],
	}
	for _, m := range c.members {
		if m.GetStatus() == "alive" {
			out.MembersAlive++
		}
	}
	for _, p := range c.planLocked(false) {
		id := p.Partition
		if hosts(c.voters[id], c.nonvoters[id], n.Name) {
			out.ReplicasHosted++
		}
		switch l := c.leaders[id]; {
		case l < 0:
			out.PartitionsWithoutLeader++
		case l == self:
			out.LeadersHosted++
			if p.UnderReplicated {
				out.UnderReplicated++
			}
			if p.Moving {
				out.Moving++
			}
		}
	}
	return connect.NewResponse(out), nil
}

// Drain sets or clears the draining flag of a node. A real node forwards
// the request to the drained node; the fake sets the flag wherever it lands.
func (n *Node) Drain(ctx context.Context, req *connect.Request[ringkvv1.DrainRequest]) (*connect.Response[ringkvv1.DrainResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterDrainProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	name := req.Msg.GetNode()
	if name == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("drain needs a node name"))
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.memberLocked(name)
	if err != nil {
		return nil, err
	}
	if st := m.GetStatus(); st != "alive" {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("node %s is %s: only a running node can be drained; use kvctl remove %s for a node that is gone", name, st, name))
	}
	m.Draining = !req.Msg.GetUndrain()
	return connect.NewResponse(&ringkvv1.DrainResponse{Node: name, Draining: m.Draining}), nil
}

// Remove marks a node removed, refusing (like a real node) an alive one and
// the answering node itself. Every alive node "records" it.
func (n *Node) Remove(ctx context.Context, req *connect.Request[ringkvv1.RemoveRequest]) (*connect.Response[ringkvv1.RemoveResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterRemoveProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	name := req.Msg.GetNode()
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case name == "":
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("remove needs a node name"))
	case name == n.Name:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("node %s cannot remove itself: stop it, then ask another node", name))
	}
	m, err := c.memberLocked(name)
	if err != nil {
		return nil, err
	}
	if m.GetStatus() == "alive" {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("node %s is alive: drain it (kvctl drain %s --wait), stop it, then remove it", name, name))
	}
	m.Removed = true
	out := &ringkvv1.RemoveResponse{RecordedBy: []string{n.Name}}
	for _, o := range c.members {
		if o.GetStatus() == "alive" && o.GetName() != n.Name {
			out.RecordedBy = append(out.RecordedBy, o.GetName())
		}
	}
	return connect.NewResponse(out), nil
}

// Plan answers with the real planner's verdict on the model. It changes
// nothing.
func (n *Node) Plan(ctx context.Context, req *connect.Request[ringkvv1.PlanRequest]) (*connect.Response[ringkvv1.PlanResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.ClusterPlanProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	return connect.NewResponse(c.planResponse()), nil
}

// memberLocked returns the member named name, or the NotFound error a real
// node gives.
func (c *Cluster) memberLocked(name string) (*ringkvv1.Member, error) {
	for _, m := range c.members {
		if m.GetName() == name {
			return m, nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no member named %q (see kvctl members)", name))
}
