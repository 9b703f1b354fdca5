package replica

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Configuration changes. Each takes prevIndex, the index of the configuration
// the caller planned against, or 0 for none: hashicorp/raft v1.8 does not
// expose the latest configuration's index (GetConfiguration().Index() is
// always 0), so callers pass 0 and rely on Raft accepting a change only while
// no other is uncommitted, and on planning each partition from one goroutine.
// They return once the change is committed.

// AddNonvoter adds a replica that receives the log but does not vote, so a
// new replica can catch up without weakening the quorum.
func (r *Replica) AddNonvoter(ctx context.Context, id, addr string, prevIndex uint64) error {
	return r.configChange(ctx, r.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), prevIndex, r.enqueueTimeout(ctx)))
}

// Promote makes a caught-up nonvoter a voter.
func (r *Replica) Promote(ctx context.Context, id, addr string, prevIndex uint64) error {
	return r.configChange(ctx, r.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), prevIndex, r.enqueueTimeout(ctx)))
}

// RemoveServer removes a replica from the group.
func (r *Replica) RemoveServer(ctx context.Context, id string, prevIndex uint64) error {
	return r.configChange(ctx, r.raft.RemoveServer(raft.ServerID(id), prevIndex, r.enqueueTimeout(ctx)))
}

// VerifyQuorum confirms that this replica leads and a quorum still follows it.
func (r *Replica) VerifyQuorum(ctx context.Context) error {
	if r.raft.State() != raft.Leader {
		return r.notLeader()
	}
	if err := r.verify.confirm(ctx); err != nil {
		return r.translate(err, false)
	}
	return nil
}

// Membership says whether this node is in the group's latest configuration
// (which may not be committed yet) and how many servers that configuration has.
func (r *Replica) Membership() (member, voter bool, servers int) {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return false, false, 0
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == r.cfg.NodeID {
			member, voter = true, s.Suffrage == raft.Voter
		}
	}
	return member, voter, len(f.Configuration().Servers)
}

// ServerIDs returns the nodes of the group's latest configuration, voters
// and nonvoters (which may not be committed yet).
func (r *Replica) ServerIDs() []string {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	servers := f.Configuration().Servers
	ids := make([]string, len(servers))
	for i, s := range servers {
		ids[i] = string(s.ID)
	}
	return ids
}

func (r *Replica) enqueueTimeout(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return 10 * time.Second
}

func (r *Replica) configChange(ctx context.Context, f raft.IndexFuture) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return r.translate(err, true)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: configuration change: %v", ErrOutcomeUnknown, ctx.Err())
	}
}

// countingSnapshots counts the bytes read from stored snapshots. Raft reads a
// stored snapshot to send it to a follower that is too far behind (a new
// replica, mostly); a restart's restore reads only its header.
type countingSnapshots struct {
	raft.SnapshotStore
	n *atomic.Uint64
}

func (s countingSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return meta, rc, err
	}
	return meta, countingReader{rc, s.n}, nil
}

type countingReader struct {
	io.ReadCloser
	n *atomic.Uint64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(uint64(n))
	return n, err
}

// countingConn counts the bytes this node sends to a Raft peer.
type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(uint64(n))
	return n, err
}
