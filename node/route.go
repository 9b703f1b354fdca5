package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/replica"
)

// forward sends req to the node that can serve it: the partition's leader, or
// for an eventual read any alive replica. A request is forwarded at most once.
func forward[Req, Resp any](ctx context.Context, n *Node, req *connect.Request[Req], pid uint32, anyReplica, write bool,
	call func(ringkvv1connect.KVClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error),
) (*connect.Response[Resp], error) {
	if from := req.Header().Get(headerForwarded); from != "" {
		// Forwarded here because the sender thought we lead; we don't (any more).
		return nil, n.refused(fmt.Errorf("not leader for partition %d (request forwarded by %s)", pid, from), n.leaderClientAddr(pid))
	}
	target := n.leaderClientAddr(pid)
	if anyReplica && target == "" {
		target = n.anyReplicaClientAddr(pid)
	}
	if target == "" || target == n.ClientAddr() {
		return nil, fmt.Errorf("%w: partition %d has no known leader", errNoRoute, pid)
	}
	fr := connect.NewRequest(req.Msg)
	fr.Header().Set(headerForwarded, n.cfg.Name)
	resp, err := call(n.fwd.kv(target), ctx, fr)
	n.metrics.forwarded.Inc()
	if err != nil {
		return nil, forwardError(err, target, write)
	}
	return resp, nil
}

// forwardError classifies a failed forward. A refusal, or a connection that
// was never made, left the request unexecuted: retry it (errNoRoute). Any
// other failure of a write may have happened after the leader applied it, so
// its outcome is unknown; a read is simply retried.
func forwardError(err error, target string, write bool) error {
	ce, ok := errors.AsType[*connect.Error](err)
	switch {
	case ok && ce.Meta().Get(headerRefused) != "":
		return fmt.Errorf("%w: %s: %v", errNoRoute, target, ce.Message())
	case ok && connect.IsWireError(err) && ce.Code() != connect.CodeUnavailable && ce.Code() != connect.CodeUnknown:
		// The target's own answer (not found, invalid argument, outcome
		// unknown...). Errors that did not come over the wire (a reset
		// connection, which connect-go calls "canceled") fall through.
		return err
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: %s: %v", errNoRoute, target, err)
	case write:
		return fmt.Errorf("%w: forwarded to %s: %v", replica.ErrOutcomeUnknown, target, err)
	}
	return fmt.Errorf("%w: %s: %v", errNoRoute, target, err)
}

// leaderClientAddr returns the client address of pid's leader, from the local
// replica's Raft state when this node hosts pid, else from gossip.
func (n *Node) leaderClientAddr(pid uint32) string {
	if r := n.replica(pid); r != nil {
		if id := r.LeaderID(); id != "" {
			if m, ok := n.member(id); ok && m.Status == membership.StatusAlive {
				return m.Meta.ClientAddr
			}
			return ""
		}
		// A replica not added to its group yet knows no leader: ask gossip.
	}
	for _, m := range n.memberView().list {
		if m.Status == membership.StatusAlive && bitSet(m.Meta.Leading, pid) {
			return m.Meta.ClientAddr
		}
	}
	return ""
}

// anyReplicaClientAddr returns an alive node that should host pid.
func (n *Node) anyReplicaClientAddr(pid uint32) string {
	alive := n.aliveMembers()
	names := make([]string, len(alive))
	for i, m := range alive {
		names[i] = m.Meta.Name
	}
	for _, name := range partition.Place(partition.ID(pid), names, n.ident().Replicas) {
		if name == n.cfg.Name {
			continue
		}
		i := slices.IndexFunc(alive, func(m membership.Member) bool { return m.Meta.Name == name })
		return alive[i].Meta.ClientAddr
	}
	return ""
}

func bitSet(bitmap []byte, i uint32) bool {
	return int(i/8) < len(bitmap) && bitmap[i/8]&(1<<(i%8)) != 0
}

// forwarder keeps one Connect client per peer, over one shared HTTP/2
// cleartext connection pool.
type forwarder struct {
	http *http.Client
	mu   sync.Mutex
	kvs  map[string]ringkvv1connect.KVClient
	cls  map[string]ringkvv1connect.ClusterClient
}

func newForwarder() *forwarder {
	t := &http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		Protocols:           new(http.Protocols),
	}
	t.Protocols.SetUnencryptedHTTP2(true)

	return &forwarder{
		http: &http.Client{Transport: t},
		kvs:  map[string]ringkvv1connect.KVClient{},
		cls:  map[string]ringkvv1connect.ClusterClient{},
	}
}

func (f *forwarder) kv(addr string) ringkvv1connect.KVClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.kvs[addr]
	if !ok {
		c = ringkvv1connect.NewKVClient(f.http, "http://"+addr, connect.WithGRPC())
		f.kvs[addr] = c
	}
	return c
}

func (f *forwarder) cluster(addr string) ringkvv1connect.ClusterClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cls[addr]
	if !ok {
		c = ringkvv1connect.NewClusterClient(f.http, "http://"+addr, connect.WithGRPC())
		f.cls[addr] = c
	}
	return c
}

func (f *forwarder) close() { f.http.CloseIdleConnections() }
