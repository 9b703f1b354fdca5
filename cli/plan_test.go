package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/ringkv/ringkv/client/clienttest"
	"github.com/ringkv/ringkv/partition"
)

// column returns the cells of the named column of an aligned table at the
// top of out, found by the header's positions; the table ends at the first
// line that does not fit them.
func column(t *testing.T, out, name string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	var starts []int
	for i := range header {
		// tabwriter pads columns with two spaces at least; one space is
		// part of a name ("HASH RANGE").
		if header[i] != ' ' && (i == 0 || i > 1 && header[i-1] == ' ' && header[i-2] == ' ') {
			starts = append(starts, i)
		}
	}
	col := slices.IndexFunc(starts, func(s int) bool { return strings.HasPrefix(header[s:], name+" ") || header[s:] == name })
	if col < 0 {
		t.Fatalf("no column %s in:\n%s", name, out)
	}
	var cells []string
	for _, l := range lines[1:] {
		fits := len(l) > starts[len(starts)-1]
		for _, s := range starts[1:] {
			fits = fits && l[s-1] == ' ' && l[s] != ' '
		}
		if !fits {
			break
		}
		end := len(l)
		if col+1 < len(starts) {
			end = starts[col+1]
		}
		cells = append(cells, strings.TrimSpace(l[starts[col]:end]))
	}
	return cells
}

func TestPlan(t *testing.T) {
	cl := elasticCluster(t)
	r := kvctl(t, at(cl, "plan"))
	wantCode(t, r, 0)
	if r.stdout != "nothing to do: every partition matches its desired placement\n" {
		t.Fatalf("settled plan printed %q", r.stdout)
	}
	r = kvctl(t, at(cl, "plan", "--all"))
	wantCode(t, r, 0)
	if ids := column(t, r.stdout, "ID"); len(ids) != 8 || !strings.HasSuffix(r.stdout, "\nnothing to do: every partition matches its desired placement\n") {
		t.Fatalf("plan --all of a settled cluster:\n%s", r.stdout)
	}

	onNode2 := hostedBy(cl, "node2")
	cl.SetDraining(1, true)
	// One partition on node2 loses its leader: its move is blocked.
	var blocked partition.ID
	for id := range partition.ID(8) {
		if voters, _ := cl.Replicas(id); slices.Contains(voters, "node2") {
			blocked = id
			break
		}
	}
	cl.SetPartitionLeader(blocked, -1)
	r = kvctl(t, at(cl, "plan"))
	wantCode(t, r, 0)
	header := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0])
	if want := []string{"ID", "LEADER", "VOTERS", "NONVOTERS", "DESIRED", "NEXT", "BLOCKED"}; !slices.Equal(header, want) {
		t.Fatalf("plan header %v, want %v", header, want)
	}
	if ids := column(t, r.stdout, "ID"); len(ids) != onNode2 {
		t.Fatalf("plan lists %d partitions, want the %d on node2:\n%s", len(ids), onNode2, r.stdout)
	}
	if !strings.Contains(r.stdout, "add-nonvoter node") || !strings.Contains(r.stdout, "no leader") || !strings.Contains(r.stdout, "(none)") {
		t.Fatalf("plan lacks the next steps or the blocked partition:\n%s", r.stdout)
	}
	totals := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if want := fmt.Sprintf("0 under-replicated, %d moving, %s planned", onNode2, plural(onNode2-1, "move")); totals[len(totals)-1] != want {
		t.Fatalf("totals line %q, want %q", totals[len(totals)-1], want)
	}

	r = kvctl(t, at(cl, "-o", "json", "plan"))
	wantCode(t, r, 0)
	doc := oneJSON[map[string]any](t, r)
	if doc["moving"] != float64(onNode2) || doc["moves_planned"] != float64(onNode2-1) || doc["under_replicated"] != 0.0 {
		t.Fatalf("plan JSON totals %v", doc)
	}
	parts := doc["partitions"].([]any)
	if len(parts) != 8 {
		t.Fatalf("plan JSON lists %d partitions, want all 8", len(parts))
	}
	p := parts[blocked].(map[string]any)
	for _, f := range []string{"id", "leader", "voters", "nonvoters", "desired", "next", "blocked", "moving", "under_replicated"} {
		if _, ok := p[f]; !ok {
			t.Fatalf("plan JSON partition lacks %s: %v", f, p)
		}
	}
	if p["blocked"] == "" || p["moving"] != true || p["leader"] != "" {
		t.Fatalf("blocked partition JSON %v", p)
	}
	if nv, ok := p["nonvoters"].([]any); !ok || len(nv) != 0 {
		t.Fatalf("nonvoters JSON %v, want []", p["nonvoters"])
	}
	if n := len(cl.Calls("/ringkv.v1.Cluster/Drain")) + len(cl.Calls("/ringkv.v1.Cluster/Remove")); n != 0 {
		t.Fatalf("plan changed the cluster: %d calls", n)
	}
}

func TestMovementIsVisible(t *testing.T) {
	cl := elasticCluster(t)
	onNode2 := hostedBy(cl, "node2")
	cl.SetDraining(1, true)
	if n := cl.Step(); n != onNode2 {
		t.Fatalf("first step moved %d partitions, want %d", n, onNode2)
	}
	cl.SetMemberStatus(3, "dead") // its partitions become under-replicated

	// partitions: the JSON matches the fake; the table's STATE the JSON.
	type partJSON struct {
		ID              uint32   `json:"id"`
		Voters          []string `json:"voters"`
		Nonvoters       []string `json:"nonvoters"`
		Moving          bool     `json:"moving"`
		UnderReplicated bool     `json:"under_replicated"`
	}
	parts := oneJSON[[]partJSON](t, kvctl(t, at(cl, "-o", "json", "partitions")))
	states := map[string]int{}
	for _, p := range parts {
		voters, nonvoters := cl.Replicas(partition.ID(p.ID))
		if !slices.Equal(p.Voters, voters) || !slices.Equal(p.Nonvoters, append([]string{}, nonvoters...)) {
			t.Fatalf("partition %d JSON voters %v nonvoters %v; the fake has %v, %v", p.ID, p.Voters, p.Nonvoters, voters, nonvoters)
		}
		states[partitionJSON{Moving: p.Moving, UnderReplicated: p.UnderReplicated}.state()]++
	}
	if states["moving"] == 0 || states["under-replicated"]+states["under-replicated,moving"] == 0 {
		t.Fatalf("states %v; the test wants moving and under-replicated partitions", states)
	}
	r := kvctl(t, at(cl, "partitions"))
	wantCode(t, r, 0)
	got := map[string]int{}
	for _, s := range column(t, r.stdout, "STATE") {
		got[s]++
	}
	if !maps.Equal(got, states) {
		t.Fatalf("table states %v, JSON states %v:\n%s", got, states, r.stdout)
	}
	if nv := column(t, r.stdout, "NONVOTERS"); slices.Index(nv, "-") < 0 || len(nv) != 8 {
		t.Fatalf("NONVOTERS column %v; want \"-\" where there are none", nv)
	}

	// status: the nodes' MOVING counts add up; JSON shows the drain.
	r = kvctl(t, at(cl, "status"))
	wantCode(t, r, 0)
	if h := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0]); !slices.Contains(h, "UNDER-REPL") || !slices.Contains(h, "MOVING") {
		t.Fatalf("status header %v", h)
	}
	status := oneJSON[[]map[string]any](t, kvctl(t, at(cl, "-o", "json", "status")))
	var moving, under, sent float64
	for _, s := range status {
		moving += s["moving"].(float64)
		under += s["under_replicated"].(float64)
		sent += s["raft_bytes_sent"].(float64)
		if want := s["node"] == "node2"; s["draining"] != want {
			t.Fatalf("status JSON of %v: draining %v, want %v", s["node"], s["draining"], want)
		}
	}
	if int(moving) != states["moving"]+states["under-replicated,moving"] || int(under) != states["under-replicated"]+states["under-replicated,moving"] {
		t.Fatalf("status counts %v moving, %v under-replicated; partitions say %v", moving, under, states)
	}
	if sent != float64(onNode2*clienttest.MoveBytes) {
		t.Fatalf("raft_bytes_sent sums to %v, want %d", sent, onNode2*clienttest.MoveBytes)
	}

	// members: FLAGS column and JSON booleans.
	wantCode(t, kvctl(t, invocation{args: []string{"--endpoints", cl.Nodes[0].Addr, "remove", "node4"}}), 0)
	r = kvctl(t, at(cl, "members"))
	wantCode(t, r, 0)
	if flags := column(t, r.stdout, "FLAGS"); !slices.Equal(flags, []string{"-", "draining", "-", "removed"}) {
		t.Fatalf("FLAGS column %v:\n%s", flags, r.stdout)
	}
	members := oneJSON[[]map[string]any](t, kvctl(t, at(cl, "-o", "json", "members")))
	if members[1]["draining"] != true || members[3]["removed"] != true || members[0]["draining"] != false {
		t.Fatalf("members JSON %v", members)
	}
}
