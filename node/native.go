package node

import (
	"github.com/ringkv/ringkv/wire"
)

// newNativeServer builds the native side of the client port (package wire):
// the same KV service as over Connect, with the same limits and metrics,
// without HTTP/2.
func newNativeServer(n *Node) (*wire.Server, error) {
	cfg := wire.DefaultServerConfig()
	cfg.MaxRequestBytes = n.maxRequestBytes()
	kv := wire.ServeKV(kvService{n}, n.metrics.observe)
	// No growStack here (stack.go): wire runs requests on reused workers,
	// whose stacks stay grown.
	return wire.NewServer(cfg, kv, n.log.With("component", "native"))
}
