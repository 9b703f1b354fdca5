package cli

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/client"
)

type memberJSON struct {
	Name       string `json:"name"`
	Status     string `json:"status"`
	ClientAddr string `json:"client_addr"`
	PeerAddr   string `json:"peer_addr"`
	GossipAddr string `json:"gossip_addr"`
	Draining   bool   `json:"draining"`
	Removed    bool   `json:"removed"`
}

func (a *app) membersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members",
		Long: `List the cluster's members as the answering node's gossip sees them, with
their status (alive, suspect, dead or left), addresses (client: kvctl and
the Go client; peer: Raft; gossip) and flags: draining (kvctl drain: it
takes no replicas and gives its own away) and removed (kvctl remove: gone
for good).`,
		Example: `  kvctl members
  kvctl members -o json`,
		Args: args(0, ""),
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, _ []string) error {
		members, err := c.Members(ctx)
		if err != nil {
			return err
		}
		out := make([]memberJSON, 0, len(members))
		for _, m := range members {
			out = append(out, memberJSON{m.GetName(), m.GetStatus(), m.GetClientAddr(), m.GetPeerAddr(), m.GetGossipAddr(),
				m.GetDraining(), m.GetRemoved()})
		}
		if a.jsonMode() {
			return a.printJSON(out)
		}
		rows := make([][]string, 0, len(out))
		for _, m := range out {
			var flags []string
			if m.Draining {
				flags = append(flags, "draining")
			}
			if m.Removed {
				flags = append(flags, "removed")
			}
			rows = append(rows, []string{m.Name, m.Status, list(flags), m.ClientAddr, m.PeerAddr, m.GossipAddr})
		}
		return table(a.stdout, []string{"NAME", "STATUS", "FLAGS", "CLIENT", "PEER", "GOSSIP"}, rows)
	})
	return cmd
}

type partitionJSON struct {
	ID               uint32   `json:"id"`
	HashStart        string   `json:"hash_start"`
	HashEnd          string   `json:"hash_end"`
	Leader           string   `json:"leader"`
	LeaderClientAddr string   `json:"leader_client_addr"`
	Replicas         []string `json:"replicas"`
	Voters           []string `json:"voters"`
	NonVoters        []string `json:"nonvoters"`
	Moving           bool     `json:"moving"`
	UnderReplicated  bool     `json:"under_replicated"`
	Term             uint64   `json:"term"`
	AppliedIndex     uint64   `json:"applied_index"`
}

// state is the STATE column: what the partition is doing.
func (p partitionJSON) state() string {
	switch {
	case p.UnderReplicated && p.Moving:
		return "under-replicated,moving"
	case p.UnderReplicated:
		return "under-replicated"
	case p.Moving:
		return "moving"
	}
	return "ok"
}

func (a *app) partitionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "partitions",
		Short: "List the partitions, their leaders and replicas",
		Long: `List every partition: its range of the 64-bit xxhash space, its Raft leader
(empty when none is known), its voters and nonvoters (replicas still
catching up; "-" when none), and its state: moving (the voters differ from
the desired placement, or a nonvoter is catching up), under-replicated
(fewer than R voters alive) or ok, as the answering node sees them. Hash
bounds print as hexadecimal strings. kvctl plan shows what would happen
next.`,
		Example: `  kvctl partitions
  kvctl partitions -o json`,
		Args: args(0, ""),
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, _ []string) error {
		resp, err := c.Partitions(ctx)
		if err != nil {
			return err
		}
		out := make([]partitionJSON, 0, len(resp.GetPartitions()))
		for _, p := range resp.GetPartitions() {
			out = append(out, partitionOf(p))
		}
		if a.jsonMode() {
			return a.printJSON(out)
		}
		rows := make([][]string, 0, len(out))
		for _, p := range out {
			leader := p.Leader
			if leader == "" {
				leader = "(none)"
			}
			rows = append(rows, []string{strconv.FormatUint(uint64(p.ID), 10), leader, list(p.Voters), list(p.NonVoters), p.state(),
				strconv.FormatUint(p.Term, 10), strconv.FormatUint(p.AppliedIndex, 10), p.HashStart + "-" + p.HashEnd})
		}
		return table(a.stdout, []string{"ID", "LEADER", "VOTERS", "NONVOTERS", "STATE", "TERM", "APPLIED", "HASH RANGE"}, rows)
	})
	return cmd
}

func partitionOf(p *ringkvv1.Partition) partitionJSON {
	voters, nonvoters, _ := replicaSets(p)
	return partitionJSON{
		ID:               p.GetId(),
		HashStart:        fmt.Sprintf("0x%016x", p.GetHashStart()),
		HashEnd:          fmt.Sprintf("0x%016x", p.GetHashEnd()),
		Leader:           p.GetLeader(),
		LeaderClientAddr: p.GetLeaderClientAddr(),
		Replicas:         append([]string{}, p.GetReplicas()...),
		Voters:           append([]string{}, voters...),
		NonVoters:        append([]string{}, nonvoters...),
		Moving:           p.GetMoving(),
		UnderReplicated:  p.GetUnderReplicated(),
		Term:             p.GetTerm(),
		AppliedIndex:     p.GetAppliedIndex(),
	}
}

// replicaSets returns a partition's voters and nonvoters: the fields a
// current node fills, else (an older node) the replica details. known is
// false when no node reported the partition; voters are then the replicas
// the answering node listed, its desired placement.
func replicaSets(p *ringkvv1.Partition) (voters, nonvoters []string, known bool) {
	if len(p.GetVoters()) > 0 || len(p.GetNonvoters()) > 0 {
		return p.GetVoters(), p.GetNonvoters(), true
	}
	if len(p.GetReplicaDetails()) == 0 {
		return p.GetReplicas(), nil, false
	}
	for _, r := range p.GetReplicaDetails() {
		if r.GetSuffrage() == "nonvoter" {
			nonvoters = append(nonvoters, r.GetNode())
		} else {
			voters = append(voters, r.GetNode())
		}
	}
	return voters, nonvoters, true
}

type statusJSON struct {
	Endpoint                string `json:"endpoint"`
	Node                    string `json:"node,omitempty"`
	ClusterID               string `json:"cluster_id,omitempty"`
	PartitionCount          uint32 `json:"partition_count"`
	ReplicationFactor       uint32 `json:"replication_factor"`
	MembersAlive            uint32 `json:"members_alive"`
	MembersTotal            uint32 `json:"members_total"`
	ReplicasHosted          uint32 `json:"replicas_hosted"`
	LeadersHosted           uint32 `json:"leaders_hosted"`
	PartitionsWithoutLeader uint32 `json:"partitions_without_leader"`
	UnderReplicated         uint32 `json:"under_replicated"`
	Moving                  uint32 `json:"moving"`
	Draining                bool   `json:"draining"`
	RaftBytesSent           uint64 `json:"raft_bytes_sent"`
	Version                 string `json:"version,omitempty"`
	Ready                   bool   `json:"ready"`
	Error                   string `json:"error,omitempty"`
}

func (a *app) statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the status of every endpoint's node",
		Long: `Ask the node behind each endpoint in --endpoints for its status: cluster id,
members alive, replicas and leaders it hosts, partitions without a leader
(cluster-wide, as it sees them), among the partitions it leads those
under-replicated (fewer than R voters alive) and those moving a replica,
version and readiness. JSON adds whether the node is draining and the bytes
it has sent to Raft peers since it started (raft_bytes_sent).

Exits 1 when any endpoint could not answer; the others are still shown
(in JSON: one array, with an "error" field on the failed entries).`,
		Example: `  kvctl status
  kvctl --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 status -o json`,
		Args: args(0, ""),
	}
	cmd.RunE = a.runRaw(func(cmd *cobra.Command, _ []string) error {
		// Few attempts: an endpoint that is down should be reported, not
		// waited for until --timeout.
		c, err := a.newClient(func(cfg *client.Config) { cfg.MaxAttempts = 2 })
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
		defer cancel()
		endpoints := a.endpointList()
		out := make([]statusJSON, len(endpoints))
		var wg sync.WaitGroup
		for i, e := range endpoints {
			wg.Go(func() { out[i] = nodeStatus(ctx, c, e) })
		}
		wg.Wait()
		if err := a.printStatus(out); err != nil {
			return err
		}
		failed := 0
		var first string
		for _, s := range out {
			if s.Error != "" {
				if failed == 0 {
					first = s.Endpoint + ": " + s.Error
				}
				failed++
			}
		}
		if failed > 0 {
			return &reportedError{fmt.Errorf("status: %d of %d endpoints did not answer (%s)", failed, len(out), first)}
		}
		return nil
	})
	return cmd
}

func nodeStatus(ctx context.Context, c *client.Client, endpoint string) statusJSON {
	st, err := c.Status(ctx, endpoint)
	if err != nil {
		_, msg := describe(err)
		return statusJSON{Endpoint: endpoint, Error: msg}
	}
	return statusJSON{
		Endpoint: endpoint, Node: st.GetNode(), ClusterID: st.GetClusterId(),
		PartitionCount: st.GetPartitionCount(), ReplicationFactor: st.GetReplicationFactor(),
		MembersAlive: st.GetMembersAlive(), MembersTotal: st.GetMembersTotal(),
		ReplicasHosted: st.GetReplicasHosted(), LeadersHosted: st.GetLeadersHosted(),
		PartitionsWithoutLeader: st.GetPartitionsWithoutLeader(), Version: st.GetVersion(), Ready: st.GetReady(),
		UnderReplicated: st.GetUnderReplicated(), Moving: st.GetMoving(), Draining: st.GetDraining(),
		RaftBytesSent: st.GetRaftBytesSent(),
	}
}

func (a *app) printStatus(out []statusJSON) error {
	if a.jsonMode() {
		return a.printJSON(out)
	}
	header := []string{"ENDPOINT", "NODE", "CLUSTER", "READY", "ALIVE", "REPLICAS", "LEADS", "LEADERLESS", "UNDER-REPL", "MOVING", "VERSION"}
	rows := make([][]string, 0, len(out))
	failed := false
	for _, s := range out {
		if s.Error != "" {
			failed = true
			continue
		}
		ready := "no"
		if s.Ready {
			ready = "yes"
		}
		rows = append(rows, []string{s.Endpoint, s.Node, s.ClusterID, ready,
			fmt.Sprintf("%d/%d", s.MembersAlive, s.MembersTotal),
			fmt.Sprintf("%d/%d", s.ReplicasHosted, s.PartitionCount),
			strconv.FormatUint(uint64(s.LeadersHosted), 10),
			strconv.FormatUint(uint64(s.PartitionsWithoutLeader), 10),
			strconv.FormatUint(uint64(s.UnderReplicated), 10), strconv.FormatUint(uint64(s.Moving), 10), s.Version})
	}
	if failed {
		header = append(header, "ERROR")
		for i := range rows {
			rows[i] = append(rows[i], "")
		}
		for _, s := range out {
			if s.Error != "" {
				row := []string{s.Endpoint}
				for len(row) < len(header)-1 {
					row = append(row, "-")
				}
				rows = append(rows, append(row, s.Error))
			}
		}
	}
	return table(a.stdout, header, rows)
}
