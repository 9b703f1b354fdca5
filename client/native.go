package client

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/wire"
)

// reprobeNative is how long a Client keeps using Connect with a node that
// did not speak the native protocol, before asking again (it may have been
// upgraded meanwhile).
const reprobeNative = time.Minute

// nativeKV is the KV service of one node over the native protocol (package
// wire): one pipelined connection, dialed on first use and again after it
// breaks. With a node that does not speak it, calls go to fallback
// (Connect) instead.
type nativeKV struct {
	addr     string
	dialer   *net.Dialer // its Timeout also bounds the preface exchange
	fallback ringkvv1connect.KVClient
	log      *slog.Logger

	mu          sync.Mutex
	conn        *wire.Conn
	dialing     chan struct{} // closed when the dial in progress ends
	connectOnly time.Time     // until then, use fallback
	closed      bool
}

var _ ringkvv1connect.KVClient = (*nativeKV)(nil)

// get returns a working connection, or nil when the node is to be reached
// over Connect.
func (k *nativeKV) get(ctx context.Context) (*wire.Conn, error) {
	for {
		k.mu.Lock()
		switch {
		case k.closed:
			k.mu.Unlock()
			return nil, wire.ErrClosed
		case k.conn != nil && k.conn.Err() == nil:
			c := k.conn
			k.mu.Unlock()
			return c, nil
		case time.Now().Before(k.connectOnly):
			k.mu.Unlock()
			return nil, nil
		case k.dialing != nil:
			wait := k.dialing
			k.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		k.dialing = done
		k.mu.Unlock()

		dctx, cancel := context.WithTimeout(ctx, k.dialer.Timeout)
		c, err := wire.Dial(dctx, k.dialer, k.addr)
		cancel()
		k.mu.Lock()
		k.dialing = nil
		close(done)
		switch {
		case errors.Is(err, wire.ErrNotNative):
			k.log.Debug("ringkv: node does not speak the native protocol; using Connect", "endpoint", k.addr, "err", err)
			k.connectOnly = time.Now().Add(reprobeNative)
			k.mu.Unlock()
			return nil, nil
		case err != nil:
			k.mu.Unlock()
			return nil, err
		case k.closed:
			k.mu.Unlock()
			_ = c.Close()
			return nil, wire.ErrClosed
		}
		if k.conn != nil {
			_ = k.conn.Close()
		}
		k.conn = c
		k.mu.Unlock()
		return c, nil
	}
}

// close closes the connection; later calls fail with wire.ErrClosed.
func (k *nativeKV) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.conn != nil {
		_ = k.conn.Close()
	}
}

func (k *nativeKV) Get(ctx context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	return callNative(ctx, k, wire.MethodGet, req, k.fallback.Get)
}

func (k *nativeKV) Put(ctx context.Context, req *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	return callNative(ctx, k, wire.MethodPut, req, k.fallback.Put)
}

func (k *nativeKV) Delete(ctx context.Context, req *connect.Request[ringkvv1.DeleteRequest]) (*connect.Response[ringkvv1.DeleteResponse], error) {
	return callNative(ctx, k, wire.MethodDelete, req, k.fallback.Delete)
}

func (k *nativeKV) CompareAndSwap(ctx context.Context, req *connect.Request[ringkvv1.CompareAndSwapRequest]) (*connect.Response[ringkvv1.CompareAndSwapResponse], error) {
	return callNative(ctx, k, wire.MethodCompareAndSwap, req, k.fallback.CompareAndSwap)
}

// callNative makes one call over the native connection, or over Connect
// when the node does not speak the native protocol. Errors keep the shapes
// classify expects: the server's answers are Connect wire errors, a failed
// dial a *net.OpError with Op "dial", a broken connection anything else.
func callNative[Req, Resp any, PReq interface {
	*Req
	proto.Message
}, PResp interface {
	*Resp
	proto.Message
}](ctx context.Context, k *nativeKV, m wire.Method, req *connect.Request[Req],
	fallback func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error),
) (*connect.Response[Resp], error) {
	c, err := k.get(ctx)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return fallback(ctx, req)
	}
	return wire.CallKV[Req, Resp, PReq, PResp](ctx, c, m, req)
}
