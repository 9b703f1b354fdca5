package client

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/internal/seqtrack"
)

// Client talks to a RingKV cluster. It is safe for concurrent use; share one
// per process and per cluster. Close it when done.
type Client struct {
	cfg        Config
	log        *slog.Logger
	httpClient *http.Client
	ownHTTP    *http.Transport // closed by Close; nil for a caller's client
	clientID   uint64
	seqs       *seqtrack.Tracker
	router     *router
	jitter     func(n int64) int64 // [0, n); tests make it deterministic

	mu        sync.Mutex
	endpoints map[string]*endpoint

	closed   atomic.Bool
	bgMu     sync.Mutex // orders starting background work against Close
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// endpoint holds the stubs of one node.
type endpoint struct {
	addr    string
	kv      ringkvv1connect.KVClient // native when possible, else Connect
	cluster ringkvv1connect.ClusterClient
	native  *nativeKV // nil when kv is Connect's
}

// New returns a Client for cfg. It does not contact the cluster: the first
// request does.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Endpoints = append([]string(nil), cfg.Endpoints...)
	c := &Client{
		cfg:        cfg,
		log:        cfg.Logger,
		httpClient: cfg.HTTPClient,
		clientID:   randomNonZero(),
		seqs:       seqtrack.New(),
		router:     newRouter(cfg.Endpoints, time.Now),
		endpoints:  make(map[string]*endpoint),
		jitter:     rand.Int64N,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.httpClient == nil {
		c.httpClient, c.ownHTTP = newHTTPClient(cfg)
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	return c, nil
}

func randomNonZero() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

// ClientID is the random id this Client puts in every write's request id.
func (c *Client) ClientID() uint64 { return c.clientID }

// Close stops background work, closes the native connections and, when the
// Client made its own HTTP client, its idle connections. Requests started
// afterwards fail with ErrClosed. Requests in flight on a native connection
// are cut off: reads fail with ErrClosed, writes with ErrOutcomeUnknown
// (wrapping ErrClosed too), since they may have been applied. Those over
// Connect finish their current attempt. Close is idempotent.
func (c *Client) Close() error {
	c.bgMu.Lock()
	wasClosed := c.closed.Swap(true)
	c.bgMu.Unlock()
	if wasClosed {
		return nil
	}
	c.bgCancel()
	c.bg.Wait()
	c.mu.Lock()
	for _, e := range c.endpoints {
		if e.native != nil {
			e.native.close()
		}
	}
	c.mu.Unlock()
	if c.ownHTTP != nil {
		c.ownHTTP.CloseIdleConnections()
	}
	return nil
}

// endpoint returns the stubs for addr, making them on first use.
func (c *Client) endpoint(addr string) *endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.endpoints[addr]; ok {
		return e
	}
	url := baseURL(addr)
	// No gzip: messages are small and latency matters more than bytes;
	// without it the server has nothing to compress.
	noGzip := connect.WithAcceptCompression("gzip", nil, nil)
	e := &endpoint{
		addr:    addr,
		kv:      ringkvv1connect.NewKVClient(c.httpClient, url, noGzip),
		cluster: ringkvv1connect.NewClusterClient(c.httpClient, url, noGzip),
	}
	if c.cfg.Protocol == ProtocolNative && !strings.HasPrefix(addr, "https://") {
		e.native = &nativeKV{
			addr:     endpointKey(addr),
			dialer:   &net.Dialer{Timeout: c.cfg.DialTimeout, KeepAlive: 30 * time.Second},
			fallback: e.kv,
			log:      c.log,
		}
		e.kv = e.native
	}
	c.endpoints[addr] = e
	return e
}

// refreshRoutesAsync refreshes the routing table in the background, at most
// once per minRefreshInterval; with onlyIfEmpty, only while there is none
// (first use). Requests never wait for it: until it arrives they go to the
// configured endpoints, which forward.
func (c *Client) refreshRoutesAsync(onlyIfEmpty bool) {
	if c.closed.Load() || !c.router.startRefresh(onlyIfEmpty) {
		return
	}
	// Under bgMu, so that Close never waits while a refresh is being added
	// (WaitGroup.Add racing with Wait).
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.closed.Load() {
		c.router.finishRefresh()
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		defer c.router.finishRefresh()
		c.refreshRoutes(c.bgCtx)
	}()
}

// refreshRoutes asks one endpoint for the partition table, once.
func (c *Client) refreshRoutes(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	ep := c.router.next()
	resp, err := c.endpoint(ep).cluster.Partitions(ctx, connect.NewRequest(&ringkvv1.PartitionsRequest{}))
	if err != nil {
		if !connect.IsWireError(err) && ctx.Err() == nil {
			c.router.markBad(ep)
		}
		c.log.Debug("ringkv: routing table refresh failed", "endpoint", ep, "err", err)
		return
	}
	if err := c.router.apply(resp.Msg); err != nil {
		c.log.Warn("ringkv: bad routing table", "endpoint", ep, "err", err)
	}
}

// Get reads key. It returns an error wrapping ErrNotFound when the key does
// not exist. Reads are retried freely and never return ErrOutcomeUnknown.
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) (KV, error) {
	o := readOptions{consistency: Strong}
	for _, opt := range opts {
		opt(&o)
	}
	rt := route{kind: routeLeader, key: key}
	if o.consistency == Eventual {
		rt = route{kind: routeAny}
	}
	req := &ringkvv1.GetRequest{Key: key, Consistency: o.consistency.String()}
	var out KV
	err := c.do(ctx, "get", rt, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.kv.Get(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		m := resp.Msg
		out = KV{Key: m.GetKey(), Value: m.GetValue(), Version: m.GetVersion(), Receipt: ReadReceipt{
			ServedBy:     m.GetReceipt().GetServedBy(),
			AppliedIndex: m.GetReceipt().GetAppliedIndex(),
			Leader:       m.GetReceipt().GetLeader(),
			Partition:    m.GetReceipt().GetPartition(),
		}}
		if out.Key == nil {
			out.Key = key
		}
		return resp.Header(), nil
	})
	if err != nil {
		return KV{}, err
	}
	return out, nil
}

// write runs one write with a request id that all its attempts share.
func (c *Client) write(ctx context.Context, op string, key []byte, fn func(ctx context.Context, e *endpoint, id *ringkvv1.RequestID) (http.Header, error)) error {
	seq, ackBelow := c.seqs.Begin()
	defer c.seqs.Finish(seq)
	id := &ringkvv1.RequestID{ClientId: c.clientID, Seq: seq, AckBelow: ackBelow}
	return c.do(ctx, op, route{kind: routeLeader, key: key}, true, func(ctx context.Context, e *endpoint) (http.Header, error) {
		return fn(ctx, e, id)
	})
}

// Put writes value under key and returns the key's new version.
func (c *Client) Put(ctx context.Context, key, value []byte) (version uint64, err error) {
	err = c.write(ctx, "put", key, func(ctx context.Context, e *endpoint, id *ringkvv1.RequestID) (http.Header, error) {
		resp, err := e.kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: key, Value: value, RequestId: id}))
		if err != nil {
			return nil, err
		}
		version = resp.Msg.GetVersion()
		return resp.Header(), nil
	})
	return version, err
}

// Delete removes key. deleted is false when the key did not exist (that is
// not an error).
func (c *Client) Delete(ctx context.Context, key []byte) (deleted bool, err error) {
	err = c.write(ctx, "delete", key, func(ctx context.Context, e *endpoint, id *ringkvv1.RequestID) (http.Header, error) {
		resp, err := e.kv.Delete(ctx, connect.NewRequest(&ringkvv1.DeleteRequest{Key: key, RequestId: id}))
		if err != nil {
			return nil, err
		}
		deleted = resp.Msg.GetDeleted()
		return resp.Header(), nil
	})
	return deleted, err
}

// CompareAndSwap writes newValue under key if cond holds, atomically. A
// condition that does not hold is a normal answer (Succeeded false, with the
// current state), not an error.
func (c *Client) CompareAndSwap(ctx context.Context, key []byte, cond Condition, newValue []byte) (CASResult, error) {
	req := &ringkvv1.CompareAndSwapRequest{Key: key, NewValue: newValue}
	switch cond.kind {
	case condValue:
		v := cond.value
		if v == nil {
			v = []byte{}
		}
		req.Expect = &ringkvv1.CompareAndSwapRequest_ExpectedValue{ExpectedValue: v}
	case condVersion:
		req.Expect = &ringkvv1.CompareAndSwapRequest_ExpectedVersion{ExpectedVersion: cond.version}
	case condAbsent:
		req.Expect = &ringkvv1.CompareAndSwapRequest_ExpectAbsent{ExpectAbsent: true}
	default:
		return CASResult{}, newError(ErrInvalidArgument, nil, "cas: no condition: use IfValue, IfVersion or IfAbsent")
	}
	var out CASResult
	err := c.write(ctx, "cas", key, func(ctx context.Context, e *endpoint, id *ringkvv1.RequestID) (http.Header, error) {
		req.RequestId = id // the same on every attempt
		resp, err := e.kv.CompareAndSwap(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		m := resp.Msg
		out = CASResult{
			Succeeded:      m.GetSucceeded(),
			Version:        m.GetVersion(),
			CurrentExists:  m.GetCurrentExists(),
			CurrentValue:   m.GetCurrentValue(),
			CurrentVersion: m.GetCurrentVersion(),
		}
		return resp.Header(), nil
	})
	return out, err
}

// Members lists the cluster's members as the answering node's gossip sees
// them.
func (c *Client) Members(ctx context.Context) ([]*ringkvv1.Member, error) {
	var out []*ringkvv1.Member
	err := c.do(ctx, "members", route{kind: routeAny}, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Members(ctx, connect.NewRequest(&ringkvv1.MembersRequest{}))
		if err != nil {
			return nil, err
		}
		out = resp.Msg.GetMembers()
		return resp.Header(), nil
	})
	return out, err
}

// Partitions returns the cluster-wide partition table as the answering node
// sees it. The Client also refreshes its routing table from the answer.
func (c *Client) Partitions(ctx context.Context) (*ringkvv1.PartitionsResponse, error) {
	var out *ringkvv1.PartitionsResponse
	err := c.do(ctx, "partitions", route{kind: routeAny}, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Partitions(ctx, connect.NewRequest(&ringkvv1.PartitionsRequest{}))
		if err != nil {
			return nil, err
		}
		out = resp.Msg
		return resp.Header(), nil
	})
	if err != nil {
		return nil, err
	}
	if err := c.router.apply(out); err != nil {
		c.log.Warn("ringkv: bad routing table", "err", err)
	}
	return out, nil
}

// Status asks one node for its status: the node at addr (host:port), or any
// configured endpoint when addr is "".
func (c *Client) Status(ctx context.Context, addr string) (*ringkvv1.StatusResponse, error) {
	rt := route{kind: routeAny}
	if addr != "" {
		if err := validateEndpoint(addr); err != nil {
			return nil, err
		}
		rt = route{kind: routeFixed, fixed: addr}
	}
	var out *ringkvv1.StatusResponse
	err := c.do(ctx, "status", rt, false, func(ctx context.Context, e *endpoint) (http.Header, error) {
		resp, err := e.cluster.Status(ctx, connect.NewRequest(&ringkvv1.StatusRequest{}))
		if err != nil {
			return nil, err
		}
		out = resp.Msg
		return resp.Header(), nil
	})
	return out, err
}
