package node

import (
	"context"
	"errors"
	"os"
	"slices"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/replica"
)

// catchUpSlack is how far (in Raft entries) a nonvoter's state machine may
// trail its leader's commit index and still count as caught up.
const catchUpSlack = 128

// reconcile is the placement controller. Every node runs it; each acts only
// on what it owns: it hosts the replicas the desired placement gives it, it
// drives the configuration changes of the partitions it leads (one step per
// partition at a time, as partition.Plan decides), and it deletes its
// replicas whose removal has been committed.
func (n *Node) reconcile() {
	defer n.ctrl.Done()
	changes := n.gossip.Changes()
	for {
		select {
		case <-n.stop:
			return
		case <-changes:
		case <-time.After(n.cfg.ReconcileInterval):
		}
		if !n.bootstrapped.Load() {
			continue
		}
		n.hintLeadersGone()
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RequestTimeout)
		n.hostDesired()
		n.leadMoves(ctx)
		n.collectRemoved(ctx)
		cancel()
	}
}

// hintLeadersGone tells each local follower whose leader's node gossip no
// longer reports alive, so that it stands for election early (see
// replica/failover.go; a wrong hint costs nothing).
func (n *Node) hintLeadersGone() {
	for _, r := range n.localReplicas() {
		lid := r.LeaderID()
		if lid == "" || lid == n.cfg.Name {
			continue
		}
		if m, ok := n.member(lid); ok && m.Status != membership.StatusAlive {
			r.LeaderGone(lid, "gossip reports its node "+string(m.Status))
		}
	}
}

// onPeerHangup runs when a peer hung up its heartbeat connection to this
// node: each local follower whose leader's peer port now refuses
// connections is told its leader is gone (one dial per leader node).
func (n *Node) onPeerHangup() {
	refused := map[string]bool{}
	for _, r := range n.localReplicas() {
		lid := r.LeaderID()
		if lid == "" || lid == n.cfg.Name {
			continue
		}
		gone, seen := refused[lid]
		if !seen {
			m, ok := n.member(lid)
			gone = ok && m.Meta.PeerAddr != "" && replica.PortRefuses(m.Meta.PeerAddr)
			refused[lid] = gone
		}
		if gone {
			r.LeaderGone(lid, "it hung up and its port refuses connections")
		}
	}
	for lid, gone := range refused {
		if gone {
			n.log.Info("a peer hung up and its port refuses connections; its followers here stand for election early", "peer", lid)
		}
	}
}

// nodeStates is the planner's view of the cluster's nodes, from gossip.
func (n *Node) nodeStates() []partition.NodeState {
	now := time.Now()
	id := n.ident()
	clusterID := id.ClusterID
	removed := map[string]bool{}
	for _, r := range id.Removed {
		removed[r] = true
	}
	var out []partition.NodeState
	for _, m := range n.gossip.Members() {
		if m.Meta.ClusterID != clusterID {
			continue
		}
		st := partition.NodeState{
			Name:     m.Meta.Name,
			Alive:    m.Status == membership.StatusAlive || m.Status == membership.StatusSuspect,
			Draining: m.Meta.Draining,
			Removed:  removed[m.Meta.Name],
		}
		if !st.Alive {
			st.DeadFor = now.Sub(m.Since)
		}
		out = append(out, st)
	}
	return out
}

// withUnknownMembers adds to states every node that a local replica's
// configuration names but gossip does not know: gossip has not told this
// node of it yet (it started moments ago and its join has not reached
// everyone), or forgot it long after it died. Such a node counts as dead
// since this node's gossip started, so flap damping applies to it as to a
// node gossip saw die: a restarted node with a partial view replaces nobody
// within --dead-timeout of its start, and a node unknown for longer than
// that is replaced as a dead one would be.
func (n *Node) withUnknownMembers(states []partition.NodeState) []partition.NodeState {
	var configs [][]string
	for _, r := range n.localReplicas() {
		configs = append(configs, r.ServerIDs())
	}
	return addUnknownMembers(states, configs, n.cfg.Name, n.ident().Removed, time.Since(n.gossipSince))
}

// addUnknownMembers adds to states, as dead for deadFor, each node named in
// configs that states lack (self aside). removed names the nodes an
// operator removed for good.
func addUnknownMembers(states []partition.NodeState, configs [][]string, self string, removed []string, deadFor time.Duration) []partition.NodeState {
	known := make(map[string]bool, len(states)+1)
	known[self] = true
	for _, s := range states {
		known[s.Name] = true
	}
	for _, ids := range configs {
		for _, id := range ids {
			if known[id] {
				continue
			}
			known[id] = true
			states = append(states, partition.NodeState{Name: id, DeadFor: deadFor, Removed: slices.Contains(removed, id)})
		}
	}
	return states
}

// planInput returns the planner's input with the given actual configurations.
func (n *Node) planInput(actual map[partition.ID]partition.Replicas) partition.PlanInput {
	return partition.PlanInput{
		Ring:            n.ring,
		Replicas:        n.ident().Replicas,
		Nodes:           n.withUnknownMembers(n.nodeStates()),
		DeadTimeout:     n.cfg.DeadTimeout,
		Actual:          actual,
		MaxMovesPerNode: n.cfg.MaxMoves,
	}
}

// desired returns the desired placement over eligible nodes.
func (n *Node) desired() partition.Placement {
	in := n.planInput(nil)
	var eligible []string
	for _, s := range in.Nodes {
		if in.Eligible(s) {
			eligible = append(eligible, s.Name)
		}
	}
	return partition.PlaceAll(n.ring, eligible, in.Replicas)
}

// hostDesired starts an (empty) replica for every partition the desired
// placement gives this node, so that the partition's leader can add it.
func (n *Node) hostDesired() {
	for pid, reps := range n.desired() {
		if !slices.Contains(reps, n.cfg.Name) || n.replica(uint32(pid)) != nil {
			continue
		}
		if _, err := n.openReplica(uint32(pid)); err != nil {
			n.log.Warn("starting replica", "partition", pid, "error", err)
			continue
		}
		n.log.Info("hosting new replica; waiting for its leader to add it", "partition", pid)
	}
}

// leadMoves takes the next configuration step of every partition this node
// leads, as far as the move limit allows.
func (n *Node) leadMoves(ctx context.Context) {
	actual := map[partition.ID]partition.Replicas{}
	led := map[partition.ID]*replica.Replica{}
	states := map[partition.ID]replica.State{}
	applied := n.peerApplied(ctx)
	for _, r := range n.localReplicas() {
		if !r.IsLeader() {
			continue
		}
		st := r.State()
		a := partition.Replicas{Leader: n.cfg.Name}
		for _, s := range st.Servers {
			if s.Voter {
				a.Voters = append(a.Voters, s.ID)
				continue
			}
			a.Nonvoters = append(a.Nonvoters, s.ID)
			if ap, ok := applied[s.ID][st.Partition]; ok && ap+catchUpSlack >= st.CommitIndex {
				a.CaughtUp = append(a.CaughtUp, s.ID)
			}
		}
		pid := partition.ID(st.Partition)
		actual[pid], led[pid], states[pid] = a, r, st
	}
	var under, moving int
	for _, p := range partition.Plan(n.planInput(actual)) {
		r := led[p.Partition]
		if r == nil {
			continue
		}
		if p.UnderReplicated {
			under++
		}
		if p.Moving {
			moving++
		}
		if p.Next != nil {
			n.step(ctx, r, states[p.Partition], *p.Next)
		}
	}
	n.metrics.underReplicated.Set(float64(under))
	n.metrics.moving.Set(float64(moving))
}

// peerApplied asks the nodes that hold nonvoters of partitions led here how
// far their replicas have applied: node -> partition -> applied index.
func (n *Node) peerApplied(ctx context.Context) map[string]map[uint32]uint64 {
	want := map[string]bool{}
	for _, r := range n.localReplicas() {
		if !r.IsLeader() {
			continue
		}
		for _, s := range r.State().Servers {
			if !s.Voter {
				want[s.ID] = true
			}
		}
	}
	out := map[string]map[uint32]uint64{}
	for name := range want {
		m, ok := n.member(name)
		if !ok || m.Status != membership.StatusAlive {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := n.fwd.cluster(m.Meta.ClientAddr).Partitions(cctx, connect.NewRequest(&ringkvv1.PartitionsRequest{LocalOnly: true}))
		cancel()
		if err != nil {
			continue
		}
		out[name] = map[uint32]uint64{}
		for _, p := range resp.Msg.Partitions {
			out[name][p.Id] = p.AppliedIndex
		}
	}
	return out
}

// step runs one configuration step on a partition this node leads, after
// confirming that a quorum still follows it.
func (n *Node) step(ctx context.Context, r *replica.Replica, st replica.State, a partition.Action) {
	log := n.log.With("partition", a.Partition, "action", a.Kind.String(), "node", a.Node)
	if err := r.VerifyQuorum(ctx); err != nil {
		log.Debug("not acting: leadership not confirmed", "error", err)
		return
	}
	addr := ""
	if m, ok := n.member(a.Node); ok {
		addr = m.Meta.PeerAddr
	}
	var err error
	switch a.Kind {
	case partition.ActAddNonvoter:
		n.metrics.movesStarted.Inc()
		err = r.AddNonvoter(ctx, a.Node, addr, 0)
	case partition.ActPromote:
		err = r.Promote(ctx, a.Node, addr, 0)
	case partition.ActRemove:
		err = r.RemoveServer(ctx, a.Node, 0)
		if err == nil {
			n.metrics.movesFinished.Inc()
		}
	case partition.ActTransferLeader:
		err = r.TransferLeadership(a.Node, addr)
	}
	if err != nil {
		n.metrics.movesFailed.Inc()
		log.Warn("configuration step failed", "error", err)
		return
	}
	log.Info("configuration step done")
}

// collectRemoved deletes local replicas that are no longer in their group.
// Only the partition's leader decides: its committed configuration no longer
// lists this node. The replica's own configuration cannot: a replica that is
// catching up replays old configurations that predate its addition. Until it
// is deleted such a replica serves nothing (eventual reads need a voter).
// It asks only about replicas that may have been removed without seeing it
// in their own log: those not in their own latest configuration, and those
// that hear from no leader (hearsNoLeader). An empty replica that was never
// added and that the placement no longer gives this node (hosted early,
// before gossip showed the whole cluster) is dropped too.
func (n *Node) collectRemoved(ctx context.Context) {
	desired := n.desired()
	peers := n.peerReports()
	for _, r := range n.localReplicas() {
		if why := n.removedReason(ctx, r, desired, peers); why != "" {
			n.destroyReplica(r.Partition(), why)
		}
	}
}

// localReplica is what collectRemoved reads of a hosted replica
// (*replica.Replica).
type localReplica interface {
	Partition() uint32
	Membership() (member, voter bool, servers int)
	LeaderID() string
	IsLeader() bool
	LastContact() time.Time
	Quiescent() bool
}

// removedReason says why r is to be deleted, or "" to keep it.
func (n *Node) removedReason(ctx context.Context, r localReplica, desired partition.Placement, peers *peerReports) string {
	member, _, servers := r.Membership()
	pid := r.Partition()
	switch {
	case servers == 0:
		if !slices.Contains(desired[partition.ID(pid)], n.cfg.Name) {
			return "never added to its group, and no longer placed on this node"
		}
	case !member || n.hearsNoLeader(r):
		if n.leaderDroppedUs(ctx, r, peers) {
			return "the partition's leader reports a committed configuration without this node"
		}
	}
	return ""
}

// hearsNoLeader reports whether r neither leads nor follows a leader that
// still contacts it: it names no leader, or it has heard from none for
// twice as long as Raft waits before it stands for election (the heartbeat
// timeout, or the quiesce timeout when its group is quiet). A replica
// removed while it was cut off is one of these once it runs again, as the
// leader that removed it never contacts it again, while its own
// configuration still lists it; it may even go on naming that leader (see
// replica.LastContact), so only the silence tells.
func (n *Node) hearsNoLeader(r localReplica) bool {
	if r.IsLeader() {
		return false
	}
	wait := n.cfg.HeartbeatTimeout
	if r.Quiescent() {
		wait = n.cfg.QuiesceTimeout
	}
	return r.LeaderID() == "" || time.Since(r.LastContact()) > 2*wait
}

// peerReports is one collectRemoved pass's view of the other nodes: the
// members gossip shows, and what each reports of the replicas it hosts
// (Partitions, local only), asked at most once per pass however many
// replicas need it.
type peerReports struct {
	members []membership.Member // alive or suspect, sorted by name, this node excluded
	ask     func(context.Context, membership.Member) ([]*ringkvv1.Partition, error)
	got     map[string]peerReport
}

type peerReport struct {
	parts []*ringkvv1.Partition
	err   error
}

func (n *Node) peerReports() *peerReports {
	return newPeerReports(n.cfg.Name, n.memberView().list, func(ctx context.Context, m membership.Member) ([]*ringkvv1.Partition, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := n.fwd.cluster(m.Meta.ClientAddr).Partitions(ctx, connect.NewRequest(&ringkvv1.PartitionsRequest{LocalOnly: true}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.Partitions, nil
	})
}

// newPeerReports keeps the members other than self that are alive or
// suspect; ask asks one of them for its report.
func newPeerReports(self string, members []membership.Member, ask func(context.Context, membership.Member) ([]*ringkvv1.Partition, error)) *peerReports {
	p := &peerReports{ask: ask, got: map[string]peerReport{}}
	for _, m := range members {
		if m.Meta.Name != self && (m.Status == membership.StatusAlive || m.Status == membership.StatusSuspect) {
			p.members = append(p.members, m)
		}
	}
	return p
}

// report returns m's report, asking m on first use.
func (p *peerReports) report(ctx context.Context, m membership.Member) peerReport {
	rep, ok := p.got[m.Meta.Name]
	if !ok {
		rep.parts, rep.err = p.ask(ctx, m)
		p.got[m.Meta.Name] = rep
	}
	return rep
}

// removalSeen is the first sighting of a leader's configuration without this
// node: the removal is committed once that leader's commit index reaches the
// last index it had then (hashicorp/raft does not say which configuration is
// committed, but everything up to a committed index is).
type removalSeen struct {
	leader    string
	term      uint64
	lastIndex uint64
}

// leaderDroppedUs asks the partition's leader whether its committed
// configuration no longer includes this node. It looks for the leader among
// the other members that are alive or suspect: first the one the replica
// names, then those whose gossiped leadership bitmap has the partition, then,
// if none of these reports itself as its leader, every other member: a
// replica back from being cut off may name no leader or a stale one, and
// this node's gossip view may be as old (it missed the new leader's
// broadcast). Only a member's report of a partition it leads counts, seen
// twice (leaderReportDropsUs). peers asks each member at most once per pass.
func (n *Node) leaderDroppedUs(ctx context.Context, r localReplica, peers *peerReports) bool {
	pid := r.Partition()
	for _, m := range peers.mayLead(r.LeaderID(), pid) {
		rep := peers.report(ctx, m)
		if rep.err != nil {
			continue
		}
		for _, p := range rep.parts {
			if p.Id == pid && p.Leader == m.Meta.Name {
				return n.leaderReportDropsUs(p)
			}
		}
	}
	return false
}

// mayLead returns the members in the order to ask them whether they lead
// pid: the one named leader, then those gossip says lead it, then the rest.
func (p *peerReports) mayLead(leader string, pid uint32) []membership.Member {
	rank := func(m membership.Member) int {
		switch {
		case m.Meta.Name == leader:
			return 0
		case bitSet(m.Meta.Leading, pid):
			return 1
		}
		return 2
	}
	out := slices.Clone(p.members)
	slices.SortStableFunc(out, func(a, b membership.Member) int { return rank(a) - rank(b) })
	return out
}

// leaderReportDropsUs applies the two-sightings rule to p, a leader's own
// report of its partition.
func (n *Node) leaderReportDropsUs(p *ringkvv1.Partition) bool {
	n.removalsMu.Lock()
	defer n.removalsMu.Unlock()
	if slices.Contains(p.Replicas, n.cfg.Name) {
		delete(n.removals, p.Id)
		return false
	}
	seen, ok := n.removals[p.Id]
	if ok && seen.leader == p.Leader && seen.term == p.Term {
		return p.CommitIndex >= seen.lastIndex
	}
	n.removals[p.Id] = removalSeen{leader: p.Leader, term: p.Term, lastIndex: p.LastIndex}
	return false
}

// destroyReplica stops a replica and deletes its data: log, state machine
// and snapshots.
func (n *Node) destroyReplica(pid uint32, why string) {
	n.mu.Lock()
	r := n.replicas[pid]
	delete(n.replicas, pid)
	n.mu.Unlock()
	if r == nil {
		return
	}
	_ = r.Close()
	n.onLeaderChange(pid, false)
	n.removalsMu.Lock()
	delete(n.removals, pid)
	n.removalsMu.Unlock()
	err := n.store.DeletePartition(pid)
	if err == nil {
		err = os.RemoveAll(replica.SnapshotPath(n.cfg.DataDir, pid))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Error("deleting removed replica's data", "partition", pid, "error", err)
		return
	}
	n.log.Info("deleted replica", "partition", pid, "why", why)
}
