package clienttest

import (
	"bytes"
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

var (
	_ ringkvv1connect.KVHandler      = (*Node)(nil)
	_ ringkvv1connect.ClusterHandler = (*Node)(nil)
)

// Get serves a read from the shared map; the receipt names this node.
func (n *Node) Get(ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.KVGetProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	if err := checkKey(req.Msg.GetKey()); err != nil {
		return nil, err
	}
	switch req.Msg.GetConsistency() {
	case "", "strong", "eventual":
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument,
			errors.New("unknown consistency "+req.Msg.GetConsistency()+": use strong or eventual"))
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	leader, id := c.leaderOf(req.Msg.GetKey())
	receipt := &ringkvv1.ReadReceipt{
		ServedBy: n.Name, AppliedIndex: c.index, Partition: uint32(id),
		Leader: leader >= 0 && c.Nodes[leader] == n,
	}
	if req.Msg.GetConsistency() != "eventual" {
		// A real node forwards a strong read to the leader, which answers.
		if leader < 0 {
			return nil, noLeader(id)
		}
		receipt.ServedBy, receipt.Leader = c.Nodes[leader].Name, true
	}
	e, ok := c.data[string(req.Msg.GetKey())]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("key not found"))
	}
	return connect.NewResponse(&ringkvv1.GetResponse{
		Key: req.Msg.GetKey(), Value: e.value, Version: e.version, Receipt: receipt,
	}), nil
}

// Put stores a value.
func (n *Node) Put(ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.KVPutProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	if err := errors.Join(checkKey(req.Msg.GetKey()), checkValue(req.Msg.GetValue())); err != nil {
		return nil, err
	}
	c := n.cluster
	out, err := c.write(req.Msg.GetKey(), req.Msg.GetRequestId(), func() proto.Message {
		c.data[string(req.Msg.GetKey())] = entry{value: bytes.Clone(req.Msg.GetValue()), version: c.index}
		return &ringkvv1.PutResponse{Version: c.index}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out.(*ringkvv1.PutResponse)), nil
}

// Delete removes a key.
func (n *Node) Delete(ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.KVDeleteProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	if err := checkKey(req.Msg.GetKey()); err != nil {
		return nil, err
	}
	c := n.cluster
	out, err := c.write(req.Msg.GetKey(), req.Msg.GetRequestId(), func() proto.Message {
		_, ok := c.data[string(req.Msg.GetKey())]
		delete(c.data, string(req.Msg.GetKey()))
		return &ringkvv1.DeleteResponse{Deleted: ok, Index: c.index}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out.(*ringkvv1.DeleteResponse)), nil
}

// CompareAndSwap swaps when the condition holds.
func (n *Node) CompareAndSwap(ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
	if err := n.enter(ctx, ringkvv1connect.KVCompareAndSwapProcedure, req.Msg, req.Header()); err != nil {
		return nil, err
	}
	if err := errors.Join(checkKey(req.Msg.GetKey()), checkValue(req.Msg.GetNewValue())); err != nil {
		return nil, err
	}
	if req.Msg.GetExpect() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("compare-and-swap needs an expectation"))
	}
	c := n.cluster
	m := req.Msg
	out, err := c.write(m.GetKey(), m.GetRequestId(), func() proto.Message {
		cur, exists := c.data[string(m.GetKey())]
		var ok bool
		switch m.GetExpect().(type) {
		case *ringkvv1.CompareAndSwapRequest_ExpectedValue:
			ok = exists && bytes.Equal(cur.value, m.GetExpectedValue())
		case *ringkvv1.CompareAndSwapRequest_ExpectedVersion:
			ok = exists && cur.version == m.GetExpectedVersion()
		case *ringkvv1.CompareAndSwapRequest_ExpectAbsent:
			ok = !exists
		}
		if !ok {
			return &ringkvv1.CompareAndSwapResponse{CurrentExists: exists, CurrentValue: cur.value, CurrentVersion: cur.version}
		}
		c.data[string(m.GetKey())] = entry{value: bytes.Clone(m.GetNewValue()), version: c.index}
		return &ringkvv1.CompareAndSwapResponse{Succeeded: true, Version: c.index}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out.(*ringkvv1.CompareAndSwapResponse)), nil
}
