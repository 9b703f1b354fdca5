package replica

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/transport"
)

// Heartbeater carries the Raft heartbeats and small appends of all of a
// node's partitions to each peer in shared frames (transport.Heartbeats).
// See DESIGN.md, "Coalesced heartbeats".
type Heartbeater interface {
	// Handle routes the partition's incoming heartbeats to heartbeat and its
	// other incoming appends to consume.
	Handle(partition uint32, heartbeat func(raft.RPC), consume chan<- raft.RPC) (remove func())
	// Urgent makes the partition's heartbeats skip the linger until done.
	Urgent(partition uint32) (done func())
	// Send delivers one small append and waits for its answer or cancel.
	Send(partition uint32, address string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, cancel <-chan struct{}) error
	// SendAsync delivers one small append and runs done with its outcome
	// once the answer comes or the call fails; an error means it was not
	// sent and done never runs (transport.Heartbeats.SendAsync).
	SendAsync(partition uint32, address string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, done func(error)) error
}

// coalescingTransport is the partition's NetworkTransport with small appends
// (heartbeats, the empty appends that tell followers the commit index, and
// those of steady-state writes: transport.Carried) sent and received
// through the node's Heartbeater. Large appends, votes, snapshots and
// TimeoutNow, and everything to a peer of an older version, still go
// through the NetworkTransport. Raft reads
// one consumer channel, fed by both.
type coalescingTransport struct {
	*raft.NetworkTransport
	hb        Heartbeater
	partition uint32
	addressOf func(string) (string, bool)
	consumeCh chan raft.RPC

	closeOnce sync.Once
	closed    chan struct{}

	mu     sync.Mutex
	remove func() // unregisters from the Heartbeater
}

var _ raft.WithAsyncAppend = (*coalescingTransport)(nil)

func newCoalescingTransport(nt *raft.NetworkTransport, hb Heartbeater, partition uint32, addressOf func(string) (string, bool)) *coalescingTransport {
	t := &coalescingTransport{
		NetworkTransport: nt,
		hb:               hb,
		partition:        partition,
		addressOf:        addressOf,
		consumeCh:        make(chan raft.RPC),
		closed:           make(chan struct{}),
	}
	go t.forward()
	return t
}

// forward passes the NetworkTransport's requests on to Raft's consumer
// channel until Close.
func (t *coalescingTransport) forward() {
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			select {
			case t.consumeCh <- rpc:
			case <-t.closed:
				return
			}
		case <-t.closed:
			return
		}
	}
}

// Consumer is the channel Raft reads requests from.
func (t *coalescingTransport) Consumer() <-chan raft.RPC { return t.consumeCh }

// SetHeartbeatHandler registers cb with both paths: the Heartbeater for
// peers that coalesce, the NetworkTransport for those that do not.
func (t *coalescingTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.NetworkTransport.SetHeartbeatHandler(cb)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.remove != nil {
		t.remove()
		t.remove = nil
	}
	if cb != nil {
		select {
		case <-t.closed:
		default:
			t.remove = t.hb.Handle(t.partition, cb, t.consumeCh)
		}
	}
}

// AppendEntries sends small appends through the Heartbeater and the others
// through the NetworkTransport.
func (t *coalescingTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if !transport.Carried(args) {
		return t.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	select {
	case <-t.closed:
		return raft.ErrTransportShutdown
	default:
	}
	err := t.hb.Send(t.partition, t.peerAddr(id, target), args, resp, t.closed)
	if errors.Is(err, transport.ErrHeartbeatsUnsupported) {
		return t.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	return err
}

// AppendEntriesAsync sends a small append through the Heartbeater without
// waiting for its answer (raft.WithAsyncAppend: the leader's fast path for
// new entries, third_party/hashicorp-raft/fastpath.go). It reports false,
// and Raft's replication goroutine sends the append the usual way, for an
// append the channel does not carry, after Close, and for a peer known to
// lack the channel.
func (t *coalescingTransport) AppendEntriesAsync(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, done func(error)) bool {
	if !transport.Carried(args) {
		return false
	}
	select {
	case <-t.closed:
		return false
	default:
	}
	return t.hb.SendAsync(t.partition, t.peerAddr(id, target), args, resp, done) == nil
}

// peerAddr is the peer port of the server id, from the node's member view
// when it knows it, else target.
func (t *coalescingTransport) peerAddr(id raft.ServerID, target raft.ServerAddress) string {
	if t.addressOf != nil {
		if a, ok := t.addressOf(string(id)); ok {
			return a
		}
	}
	return string(target)
}

// Close stops both paths; heartbeats in flight fail at once.
func (t *coalescingTransport) Close() error {
	t.closeOnce.Do(func() { close(t.closed) })
	t.SetHeartbeatHandler(nil)
	return t.NetworkTransport.Close()
}
