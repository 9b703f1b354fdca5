package wire

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// ServeKV returns a Handler that serves the KV service svc: it decodes each
// request into the method's message, calls svc with it as a Connect request
// (without headers: a native request is never a forwarded one) and answers
// with the response message. observe, when not nil, sees every call under
// the procedure name Connect would use, so metrics do not depend on the
// protocol.
func ServeKV(svc ringkvv1connect.KVHandler, observe func(procedure string, start time.Time, err error)) Handler {
	return func(ctx context.Context, m Method, payload []byte) (proto.Message, error) {
		start := time.Now()
		var proc string
		var resp proto.Message
		var err error
		switch m {
		case MethodGet:
			proc = ringkvv1connect.KVGetProcedure
			resp, err = serveKV(ctx, m, payload, svc.Get)
		case MethodPut:
			proc = ringkvv1connect.KVPutProcedure
			resp, err = serveKV(ctx, m, payload, svc.Put)
		case MethodDelete:
			proc = ringkvv1connect.KVDeleteProcedure
			resp, err = serveKV(ctx, m, payload, svc.Delete)
		case MethodCompareAndSwap:
			proc = ringkvv1connect.KVCompareAndSwapProcedure
			resp, err = serveKV(ctx, m, payload, svc.CompareAndSwap)
		default:
			return nil, connect.NewError(connect.CodeUnimplemented,
				fmt.Errorf("unknown method %d: this node serves methods %d-%d (Get, Put, Delete, CompareAndSwap)",
					uint8(m), MethodGet, MethodCompareAndSwap))
		}
		if observe != nil {
			observe(proc, start, err)
		}
		return resp, err
	}
}

// serveKV decodes payload as Req and runs fn on it.
func serveKV[Req, Resp any, PReq interface {
	*Req
	proto.Message
}](ctx context.Context, m Method, payload []byte, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (proto.Message, error) {
	req := PReq(new(Req))
	if err := proto.Unmarshal(payload, req); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cannot decode the %s request: %v", m, err))
	}
	resp, err := fn(ctx, connect.NewRequest((*Req)(req)))
	if err != nil {
		return nil, err
	}
	return any(resp.Msg).(proto.Message), nil
}

// KVClient returns the KV service over c, in the shape of the Connect
// client: the same messages and the same errors (the server's answers are
// Connect wire errors). Requests' headers are not sent, and responses have
// none.
func KVClient(c *Conn) ringkvv1connect.KVClient { return kvClient{c} }

type kvClient struct{ c *Conn }

func (k kvClient) Get(ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	return CallKV[ringkvv1.GetRequest, ringkvv1.GetResponse](ctx, k.c, MethodGet, req)
}

func (k kvClient) Put(ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	return CallKV[ringkvv1.PutRequest, ringkvv1.PutResponse](ctx, k.c, MethodPut, req)
}

func (k kvClient) Delete(ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
	return CallKV[ringkvv1.DeleteRequest, ringkvv1.DeleteResponse](ctx, k.c, MethodDelete, req)
}

func (k kvClient) CompareAndSwap(ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
	return CallKV[ringkvv1.CompareAndSwapRequest, ringkvv1.CompareAndSwapResponse](ctx, k.c, MethodCompareAndSwap, req)
}

// CallKV makes one call of method m on c with req's message and returns the
// answer as a Connect response. Errors are those of Conn.Call.
func CallKV[Req, Resp any, PReq interface {
	*Req
	proto.Message
}, PResp interface {
	*Resp
	proto.Message
}](ctx context.Context, c *Conn, m Method, req *connect.Request[Req]) (*connect.Response[Resp], error) {
	resp := PResp(new(Resp))
	if err := c.Call(ctx, m, PReq(req.Msg), resp); err != nil {
		return nil, err
	}
	return connect.NewResponse((*Resp)(resp)), nil
}
