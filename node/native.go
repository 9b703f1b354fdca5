package node

import (
	"context"
	"time"

	"github.com/ringkv/ringkv/wire"
)

// newNativeServer builds the native side of the client port (package wire):
// the same KV service as over Connect, with the same limits and metrics,
// without HTTP/2.
func newNativeServer(n *Node) (*wire.Server, error) {
	kv := wire.ServeKV(kvService{n}, n.metrics.observe)
	// No growStack here (stack.go): wire runs requests on reused workers,
	// whose stacks stay grown.
	return wire.NewServer(nativeServerConfig(n), kv, n.log.With("component", "native"))
}

func nativeServerConfig(n *Node) wire.ServerConfig {
	cfg := wire.DefaultServerConfig()
	cfg.MaxRequestBytes = n.maxRequestBytes()
	// Each request's one deadline is the budget withRetry would derive;
	// the base context's mark tells withRetry not to derive it again.
	cfg.Budget = func(timeout time.Duration) time.Duration { return n.requestBudget(timeout, timeout > 0) }
	cfg.BaseContext = context.WithValue(context.Background(), budgetedKey{}, true)
	return cfg
}
