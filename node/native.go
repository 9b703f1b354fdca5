package node

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/ringkv/ringkv/wire"
)

// newNativeServer builds the native side of the client port (package wire):
// the same KV service as over Connect, with the same limits and metrics,
// without HTTP/2.
func newNativeServer(n *Node) (*wire.Server, error) {
	cfg := wire.DefaultServerConfig()
	cfg.MaxRequestBytes = n.maxRequestBytes()
	kv := wire.ServeKV(kvService{n}, n.metrics.observe)
	return wire.NewServer(cfg, func(ctx context.Context, m wire.Method, payload []byte) (proto.Message, error) {
		growStack() // see stack.go: each request runs on a fresh goroutine
		return kv(ctx, m, payload)
	}, n.log.With("component", "native"))
}
