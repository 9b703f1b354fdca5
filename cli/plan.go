package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/client"
)

// planJSON is the JSON output of plan: the whole answer, every partition.
type planJSON struct {
	Partitions      []partitionPlanJSON `json:"partitions"`
	UnderReplicated uint32              `json:"under_replicated"`
	Moving          uint32              `json:"moving"`
	MovesPlanned    uint32              `json:"moves_planned"`
}

type partitionPlanJSON struct {
	ID              uint32   `json:"id"`
	Leader          string   `json:"leader"`
	Voters          []string `json:"voters"`
	Nonvoters       []string `json:"nonvoters"`
	Desired         []string `json:"desired"`
	Next            string   `json:"next"`
	Blocked         string   `json:"blocked"`
	Moving          bool     `json:"moving"`
	UnderReplicated bool     `json:"under_replicated"`
}

func (a *app) planCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what the cluster would do next (changes nothing)",
		Long: `Show, for the current membership, what the cluster would do next. It
changes nothing: it only asks.

For each partition that is moving (its voters differ from the desired
placement, or it has nonvoters still catching up), under-replicated (fewer
than R voters alive) or blocked, the table shows its leader, voters,
nonvoters, desired replicas (HRW over the eligible nodes: alive, not
draining, not removed), the next configuration step its leader would take
(add-nonvoter, promote, transfer-leader or remove, one at a time) and what
blocks it (no leader, no quorum, a node unreachable, the move limit). A
totals line follows. --all shows every partition.

With -o json, the whole answer, every partition included:
{partitions: [{id, leader, voters, nonvoters, desired, next, blocked,
moving, under_replicated}], under_replicated, moving, moves_planned}.`,
		Example: `  kvctl plan
  kvctl plan --all
  kvctl plan -o json | jq '.partitions[] | select(.blocked != "")'`,
		Args: args(0, ""),
	}
	cmd.Flags().BoolVar(&all, "all", false, "show every partition, settled ones included")
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, _ []string) error {
		resp, err := c.Plan(ctx)
		if err != nil {
			return err
		}
		out := planOf(resp)
		if a.jsonMode() {
			return a.printJSON(out)
		}
		return a.printPlan(out, all)
	})
	return cmd
}

func planOf(resp *ringkvv1.PlanResponse) planJSON {
	out := planJSON{
		Partitions:      make([]partitionPlanJSON, 0, len(resp.GetPartitions())),
		UnderReplicated: resp.GetUnderReplicated(),
		Moving:          resp.GetMoving(),
		MovesPlanned:    resp.GetMovesPlanned(),
	}
	for _, p := range resp.GetPartitions() {
		out.Partitions = append(out.Partitions, partitionPlanJSON{
			ID: p.GetId(), Leader: p.GetLeader(),
			Voters: nonNil(p.GetVoters()), Nonvoters: nonNil(p.GetNonvoters()), Desired: nonNil(p.GetDesired()),
			Next: p.GetNext(), Blocked: p.GetBlocked(), Moving: p.GetMoving(), UnderReplicated: p.GetUnderReplicated(),
		})
	}
	return out
}

// settled reports whether the partition needs nothing.
func (p partitionPlanJSON) settled() bool {
	return !p.Moving && !p.UnderReplicated && p.Blocked == "" && p.Next == ""
}

func (a *app) printPlan(out planJSON, all bool) error {
	rows := [][]string{}
	for _, p := range out.Partitions {
		if !all && p.settled() {
			continue
		}
		leader := p.Leader
		if leader == "" {
			leader = "(none)"
		}
		rows = append(rows, []string{strconv.FormatUint(uint64(p.ID), 10), leader,
			list(p.Voters), list(p.Nonvoters), list(p.Desired), orDash(p.Next), orDash(p.Blocked)})
	}
	if len(rows) > 0 {
		if err := table(a.stdout, []string{"ID", "LEADER", "VOTERS", "NONVOTERS", "DESIRED", "NEXT", "BLOCKED"}, rows); err != nil {
			return err
		}
	}
	if !anyUnsettled(out) {
		_, err := fmt.Fprintln(a.stdout, "nothing to do: every partition matches its desired placement")
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "%d under-replicated, %d moving, %s planned\n",
		out.UnderReplicated, out.Moving, plural(int(out.MovesPlanned), "move"))
	return err
}

func anyUnsettled(out planJSON) bool {
	for _, p := range out.Partitions {
		if !p.settled() {
			return true
		}
	}
	return false
}
