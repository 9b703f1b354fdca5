package node

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// newHTTPServer builds the client port: the KV and Cluster services over
// Connect, gRPC and JSON on one listener (HTTP/1.1 and cleartext HTTP/2),
// plus /metrics, /healthz and /readyz.
func newHTTPServer(n *Node) *http.Server {
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(n.maxRequestBytes()), connect.WithInterceptors(n.metrics.interceptor())}
	mux := http.NewServeMux()
	mux.Handle(ringkvv1connect.NewKVHandler(kvService{n}, opts...))
	mux.Handle(ringkvv1connect.NewClusterHandler(clusterService{n}, opts...))
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := n.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Handler:           withGrownStack(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return srv
}

// maxRequestBytes is the largest request body the client port reads. It
// leaves room above the value limit so that an oversized value reaches our
// own check, which names the limit, rather than the transport's (which only
// refuses bodies past it, with resource_exhausted).
func (n *Node) maxRequestBytes() int {
	return max(n.cfg.MaxValueSize*4, 16<<20) + 2*n.cfg.MaxKeySize + 64<<10
}

// ready reports why the node cannot serve its share yet: not bootstrapped, or
// a hosted partition without a known leader.
func (n *Node) ready() error {
	if !n.bootstrapped.Load() {
		return errors.New("cluster not formed yet (waiting for --bootstrap-expect nodes or for --join)")
	}
	if n.removedSelf() {
		return errRemovedSelf
	}
	missing := 0
	for _, r := range n.localReplicas() {
		if r.LeaderID() == "" {
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%d hosted partitions have no leader", missing)
	}
	return nil
}
