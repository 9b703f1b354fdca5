package node

import (
	"context"
	"sync"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/partition"
)

// clusterService implements the Cluster API.
type clusterService struct{ n *Node }

var _ ringkvv1connect.ClusterHandler = clusterService{}

// Version is the kvd version reported by Status; set at build time with
// -ldflags "-X github.com/ringkv/ringkv/node.Version=...".
var Version = "dev"

func (s clusterService) Members(ctx context.Context, _ *connect.Request[ringkvv1.MembersRequest]) (*connect.Response[ringkvv1.MembersResponse], error) {
	out := &ringkvv1.MembersResponse{}
	removed := map[string]bool{}
	for _, r := range s.n.ident().Removed {
		removed[r] = true
	}
	for _, m := range s.n.gossip.Members() {
		out.Members = append(out.Members, &ringkvv1.Member{
			Name:       m.Meta.Name,
			Status:     string(m.Status),
			ClientAddr: m.Meta.ClientAddr,
			PeerAddr:   m.Meta.PeerAddr,
			GossipAddr: m.Meta.GossipAddr,
			Draining:   m.Meta.Draining,
			Removed:    removed[m.Meta.Name],
		})
	}
	return connect.NewResponse(out), nil
}

// Partitions reports every partition's leader and replicas. Without
// local_only it asks every alive node for the replicas it hosts and merges
// the answers, trusting each partition's leader over its followers.
func (s clusterService) Partitions(ctx context.Context, req *connect.Request[ringkvv1.PartitionsRequest]) (*connect.Response[ringkvv1.PartitionsResponse], error) {
	n := s.n
	local := n.localPartitions()
	if req.Msg.LocalOnly {
		return connect.NewResponse(&ringkvv1.PartitionsResponse{PartitionCount: uint32(n.ring.Partitions()), Partitions: local, ServedBy: n.cfg.Name}), nil
	}
	reports := []partitionReport{{from: n.cfg.Name, parts: local}}
	var mu sync.Mutex
	n.fanOut(ctx, func(ctx context.Context, m membership.Member, c ringkvv1connect.ClusterClient) {
		resp, err := c.Partitions(ctx, connect.NewRequest(&ringkvv1.PartitionsRequest{LocalOnly: true}))
		if err != nil {
			n.log.Debug("partitions: peer did not answer", "peer", m.Meta.Name, "error", err)
			return
		}
		mu.Lock()
		reports = append(reports, partitionReport{from: m.Meta.Name, parts: resp.Msg.Partitions})
		mu.Unlock()
	})
	merged := n.mergePartitions(reports)
	for _, p := range n.planView(merged) {
		merged[p.Partition].Moving, merged[p.Partition].UnderReplicated = p.Moving, p.UnderReplicated
	}
	return connect.NewResponse(&ringkvv1.PartitionsResponse{
		PartitionCount: uint32(n.ring.Partitions()),
		Partitions:     merged,
		ServedBy:       n.cfg.Name,
	}), nil
}

// fanOut calls f for every other alive node at once, each call bounded by a
// second, and returns when all have returned.
func (n *Node) fanOut(ctx context.Context, f func(context.Context, membership.Member, ringkvv1connect.ClusterClient)) {
	var wg sync.WaitGroup
	for _, m := range n.aliveMembers() {
		if m.Meta.Name == n.cfg.Name {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			f(cctx, m, n.fwd.cluster(m.Meta.ClientAddr))
		})
	}
	wg.Wait()
}

// localPartitions describes the replicas this node hosts.
func (n *Node) localPartitions() []*ringkvv1.Partition {
	var out []*ringkvv1.Partition
	for _, r := range n.localReplicas() {
		st := r.State()
		p := n.partitionInfo(st.Partition)
		p.Term, p.AppliedIndex = st.Term, st.AppliedIndex
		p.LastIndex, p.CommitIndex = st.LastIndex, st.CommitIndex
		p.Leader = st.LeaderID
		if m, ok := n.member(st.LeaderID); ok {
			p.LeaderClientAddr = m.Meta.ClientAddr
		}
		for _, s := range st.Servers {
			p.Replicas = append(p.Replicas, s.ID)
			d := &ringkvv1.Replica{Node: s.ID, Suffrage: "voter"}
			if s.Voter {
				p.Voters = append(p.Voters, s.ID)
			} else {
				d.Suffrage = "nonvoter"
				p.Nonvoters = append(p.Nonvoters, s.ID)
			}
			if m, ok := n.member(s.ID); ok {
				d.ClientAddr = m.Meta.ClientAddr
			}
			p.ReplicaDetails = append(p.ReplicaDetails, d)
		}
		out = append(out, p)
	}
	return out
}

func (n *Node) partitionInfo(pid uint32) *ringkvv1.Partition {
	start, end := n.ring.Range(partition.ID(pid))
	return &ringkvv1.Partition{Id: pid, HashStart: start, HashEnd: end}
}

// partitionReport is one node's description of the replicas it hosts.
type partitionReport struct {
	from  string
	parts []*ringkvv1.Partition
}

// mergePartitions picks, per partition, the leader's own report, else the
// one with the highest term; partitions nobody reported appear with no
// leader and their desired replicas.
func (n *Node) mergePartitions(reports []partitionReport) []*ringkvv1.Partition {
	best := map[uint32]*ringkvv1.Partition{}
	fromLeader := map[uint32]bool{}
	for _, rep := range reports {
		for _, p := range rep.parts {
			cur, seen := best[p.Id]
			own := p.Leader == rep.from
			if !seen || (own && !fromLeader[p.Id]) || (!fromLeader[p.Id] && p.Term > cur.Term) {
				best[p.Id] = p
				fromLeader[p.Id] = own
			}
		}
	}
	desired := n.desired()
	out := make([]*ringkvv1.Partition, 0, n.ring.Partitions())
	for pid := range uint32(n.ring.Partitions()) {
		p, ok := best[pid]
		if !ok {
			// Nobody reported it: show where it should be, with no leader.
			p = n.partitionInfo(pid)
			p.Replicas = desired[partition.ID(pid)]
		}
		out = append(out, p)
	}
	return out
}

func (s clusterService) Status(ctx context.Context, _ *connect.Request[ringkvv1.StatusRequest]) (*connect.Response[ringkvv1.StatusResponse], error) {
	n := s.n
	id := n.ident()
	out := &ringkvv1.StatusResponse{
		Node:              n.cfg.Name,
		ClusterId:         id.ClusterID,
		PartitionCount:    uint32(n.ring.Partitions()),
		ReplicationFactor: uint32(id.Replicas),
		Version:           Version,
	}
	for _, m := range n.memberView().list {
		out.MembersTotal++
		if m.Status == membership.StatusAlive {
			out.MembersAlive++
		}
	}
	known := map[uint32]bool{}
	for _, r := range n.localReplicas() {
		out.ReplicasHosted++
		if r.IsLeader() {
			out.LeadersHosted++
		}
		if r.LeaderID() != "" {
			known[r.Partition()] = true
		}
	}
	for _, m := range n.aliveMembers() {
		for pid := range uint32(n.ring.Partitions()) {
			if bitSet(m.Meta.Leading, pid) {
				known[pid] = true
			}
		}
	}
	out.PartitionsWithoutLeader = uint32(n.ring.Partitions() - len(known))
	out.Draining = id.Draining
	for _, m := range id.InitialMembers {
		out.Founders = append(out.Founders, m.Name+"@"+m.PeerAddr)
	}
	out.RaftBytesSent = n.sentBytes.Load()
	for _, p := range n.planView(n.localPartitions()) {
		if p.Actual.Leader != n.cfg.Name {
			continue
		}
		if p.UnderReplicated {
			out.UnderReplicated++
		}
		if p.Moving {
			out.Moving++
		}
	}
	out.Ready = n.ready() == nil
	return connect.NewResponse(out), nil
}
