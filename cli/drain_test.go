package cli

import (
	"context"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client/clienttest"
	"github.com/ringkv/ringkv/partition"
)

// elasticCluster is 4 fake nodes, 8 partitions, R = 3, at the desired
// placement.
func elasticCluster(t *testing.T) *clienttest.Cluster {
	t.Helper()
	cl := clienttest.NewCluster(t, 4, 8)
	cl.SetReplicationFactor(3)
	return cl
}

// movesOnPartitionPoll makes the fake take one configuration step per
// partition whenever someone reads the partition table, as if the leaders
// worked between two polls.
func movesOnPartitionPoll(cl *clienttest.Cluster) {
	cl.SetHook(func(_ context.Context, c clienttest.Call) error {
		if c.Procedure == ringkvv1connect.ClusterPartitionsProcedure {
			cl.Step()
		}
		return nil
	})
}

// hostedBy counts the partitions with a replica on node.
func hostedBy(cl *clienttest.Cluster, node string) int {
	n := 0
	for id := range partition.ID(cl.Ring.Partitions()) {
		voters, nonvoters := cl.Replicas(id)
		if slices.Contains(voters, node) || slices.Contains(nonvoters, node) {
			n++
		}
	}
	return n
}

var drainedLine = regexp.MustCompile(`^node2 drained: 0 replicas left; (\S+ \S+) sent by Raft during the drain; took \d+s$`)

func TestDrainWait(t *testing.T) {
	cl := elasticCluster(t)
	moved := hostedBy(cl, "node2")
	if moved == 0 {
		t.Fatal("node2 hosts nothing: the test needs a partition on it")
	}
	movesOnPartitionPoll(cl)
	r := kvctl(t, at(cl, "drain", "node2", "--wait", "--poll", "10ms", "--timeout", "20s"))
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "draining node2: ") || !strings.Contains(lines[0], "replica") {
		t.Fatalf("want progress lines, then the summary:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "leadership") {
		t.Fatalf("progress does not count leaderships:\n%s", r.stdout)
	}
	m := drainedLine.FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("last line %q does not match %v", lines[len(lines)-1], drainedLine)
	}
	if want := humanBytes(uint64(moved) * clienttest.MoveBytes); m[1] != want {
		t.Fatalf("summary says %s sent, want %s (%d moved replicas)", m[1], want, moved)
	}
	if n := hostedBy(cl, "node2"); n != 0 || !cl.Draining(1) {
		t.Fatalf("after the drain node2 hosts %d partitions (draining %v)", n, cl.Draining(1))
	}
	if strings.Contains(r.stdout, "\r") {
		t.Fatal("a live line was written to a non-terminal")
	}
}

func TestDrainWaitJSON(t *testing.T) {
	cl := elasticCluster(t)
	moved := hostedBy(cl, "node2")
	movesOnPartitionPoll(cl)
	r := kvctl(t, at(cl, "-o", "json", "drain", "node2", "--wait", "--poll", "10ms", "--timeout", "20s"))
	wantCode(t, r, 0)
	doc := oneJSON[map[string]any](t, r)
	want := map[string]any{
		"node": "node2", "draining": true, "replicas_left": 0.0, "leaders_left": 0.0,
		"bytes_moved": float64(moved * clienttest.MoveBytes),
	}
	for k, v := range want {
		if doc[k] != v {
			t.Fatalf("JSON %s = %v, want %v (doc %v)", k, doc[k], v, doc)
		}
	}
	if _, ok := doc["seconds"].(float64); !ok {
		t.Fatalf("JSON lacks seconds: %v", doc)
	}
	if !strings.HasPrefix(r.stderr, "draining node2: ") {
		t.Fatalf("progress should go to stderr in JSON mode; stderr %q", r.stderr)
	}
}

func TestDrainWaitLiveLine(t *testing.T) {
	cl := elasticCluster(t)
	movesOnPartitionPoll(cl)
	inv := at(cl, "drain", "node2", "--wait", "--poll", "10ms", "--timeout", "20s")
	inv.tty = true
	r := kvctl(t, inv)
	wantCode(t, r, 0)
	progress, summary, ok := strings.Cut(r.stdout, "node2 drained:")
	if !ok || !strings.HasPrefix(progress, "\r\033[Kdraining node2: ") || !strings.HasSuffix(progress, "\r\033[K") {
		t.Fatalf("want a live line, cleared before the summary: %q", r.stdout)
	}
	if strings.Contains(progress, "\n") || strings.Count(summary, "\n") != 1 {
		t.Fatalf("a live line must not scroll: %q", r.stdout)
	}
}

func TestDrainWaitTimeout(t *testing.T) {
	cl := elasticCluster(t) // nothing moves: no Step
	left := hostedBy(cl, "node2")
	// The timeout also covers the sample, the drain call and a first poll
	// (a dozen calls): 1s leaves them room on a loaded machine.
	r := kvctl(t, at(cl, "drain", "node2", "--wait", "--poll", "20ms", "--timeout", "1s"))
	wantCode(t, r, 1)
	want := "not finished after 1s: " + plural(left, "replica")
	if !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "the drain goes on") || !strings.HasPrefix(r.stderr, "kvctl: timeout: ") ||
		strings.Contains(r.stderr, "deadline exceeded") {
		t.Fatalf("stderr %q, want a timeout with %q that says the drain goes on", r.stderr, want)
	}
	r = kvctl(t, at(cl, "-o", "json", "drain", "node2", "--wait", "--poll", "20ms", "--timeout", "1s"))
	wantCode(t, r, 1)
	doc := oneJSON[map[string]any](t, r)
	if doc["code"] != "timeout" || doc["replicas_left"] != float64(left) || doc["node"] != "node2" || !strings.Contains(doc["error"].(string), "not finished") {
		t.Fatalf("JSON %v; want code timeout with %d replicas left", doc, left)
	}
}

func TestDrainWaitDefaultTimeout(t *testing.T) {
	cl := elasticCluster(t) // nothing moves
	// The caller's context ends first; the message names the timeout that
	// kvctl chose: 30m for drain --wait without --timeout.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	err := run(ctx, []string{"--endpoints", cl.Nodes[0].Addr, "drain", "node2", "--wait", "--poll", "20ms"}, env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr,
		getenv: func(string) string { return "" }, isTerminal: func(io.Writer) bool { return false },
	})
	if ExitCode(err) != 1 || !strings.Contains(stderr.String(), "not finished after 30m0s") {
		t.Fatalf("err %v, stderr %q; want the 30m default timeout", err, stderr.String())
	}
}

func TestDrainWaitWithoutPartitionTable(t *testing.T) {
	cl := elasticCluster(t)
	cl.SetHook(func(_ context.Context, c clienttest.Call) error {
		if c.Procedure == ringkvv1connect.ClusterPartitionsProcedure {
			return connect.NewError(connect.CodeUnavailable, errors.New("peers did not answer"))
		}
		return nil
	})
	r := kvctl(t, at(cl, "-o", "json", "drain", "node2", "--wait", "--poll", "20ms", "--timeout", "1s"))
	wantCode(t, r, 1)
	doc := oneJSON[map[string]any](t, r)
	if doc["code"] != "timeout" || !strings.Contains(doc["error"].(string), "the partition table did not arrive") {
		t.Fatalf("JSON %v", doc)
	}
	if _, ok := doc["replicas_left"]; ok {
		t.Fatalf("JSON %v claims a replica count it never learned", doc)
	}
	if !cl.Draining(1) {
		t.Fatal("the drain was not started")
	}
}

func TestDrainWaitStopsWhenUndrained(t *testing.T) {
	cl := elasticCluster(t)
	cl.SetHook(func(_ context.Context, c clienttest.Call) error {
		if c.Procedure == ringkvv1connect.ClusterPartitionsProcedure {
			cl.SetDraining(1, false) // someone else undrains it
		}
		return nil
	})
	r := kvctl(t, at(cl, "drain", "node2", "--wait", "--poll", "10ms", "--timeout", "20s"))
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, "no longer draining") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestDrainUndrainRemove(t *testing.T) {
	cl := elasticCluster(t)
	cl.SetMemberStatus(3, "dead")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // prefix, table mode
		stderr string // exact, table mode
		json   map[string]any
	}{
		{"drain", []string{"drain", "node2"}, 0, "node2 draining: its replicas and leaderships are moving away", "",
			map[string]any{"node": "node2", "draining": true}},
		{"undrain", []string{"undrain", "node2"}, 0, "node2 undrained: it is eligible for replicas again\n", "",
			map[string]any{"node": "node2", "draining": false}},
		{"drain a dead node", []string{"drain", "node4"}, 1, "",
			"kvctl: node node4 is dead: only a running node can be drained; use kvctl remove node4 for a node that is gone\n",
			map[string]any{"code": "failed_precondition"}},
		{"drain an unknown node", []string{"drain", "n9"}, 1, "", "kvctl: no member named \"n9\" (see kvctl members)\n",
			map[string]any{"code": "not_found"}},
		{"remove an alive node", []string{"remove", "node2"}, 1, "",
			"kvctl: node node2 is alive: drain it (kvctl drain node2 --wait), stop it, then remove it\n",
			map[string]any{"code": "failed_precondition", "error": "node node2 is alive: drain it (kvctl drain node2 --wait), stop it, then remove it"}},
		{"remove a dead node", []string{"remove", "node4"}, 0,
			"node4 removed: recorded by node1, node2, node3; its replicas are being replaced (follow with: kvctl plan)\n", "",
			map[string]any{"node": "node4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Ask node1 only: a node refuses to remove itself.
			args := append([]string{"--endpoints", cl.Nodes[0].Addr}, tc.args...)
			r := kvctl(t, invocation{args: args})
			wantCode(t, r, tc.code)
			if !strings.HasPrefix(r.stdout, tc.stdout) || r.stderr != tc.stderr || (tc.stdout == "") != (r.stdout == "") {
				t.Fatalf("stdout %q stderr %q; want stdout %q, stderr %q", r.stdout, r.stderr, tc.stdout, tc.stderr)
			}
			r = kvctl(t, invocation{args: append(args, "-o", "json")})
			wantCode(t, r, tc.code)
			doc := oneJSON[map[string]any](t, r)
			for k, v := range tc.json {
				if doc[k] != v {
					t.Fatalf("JSON %s = %v, want %v (doc %v)", k, doc[k], v, doc)
				}
			}
		})
	}
	if !cl.Removed(3) || cl.Draining(1) {
		t.Fatalf("node4 removed %v, node2 draining %v; want true, false", cl.Removed(3), cl.Draining(1))
	}
	r := kvctl(t, invocation{args: []string{"--endpoints", cl.Nodes[0].Addr, "-o", "json", "remove", "node4"}})
	doc := oneJSON[struct {
		RecordedBy []string `json:"recorded_by"`
	}](t, r)
	if !slices.Equal(doc.RecordedBy, []string{"node1", "node2", "node3"}) {
		t.Fatalf("recorded_by %v", doc.RecordedBy)
	}
}

func TestElasticUsageErrors(t *testing.T) {
	cl := elasticCluster(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"drain without a node", []string{"drain"}, "drain takes 1 argument (NODE), got 0"},
		{"undrain two nodes", []string{"undrain", "a", "b"}, "undrain takes 1 argument (NODE), got 2"},
		{"remove without a node", []string{"remove"}, "remove takes 1 argument (NODE)"},
		{"plan with an argument", []string{"plan", "x"}, "plan takes no arguments"},
		{"zero poll", []string{"drain", "node2", "--wait", "--poll", "0s"}, "--poll must be positive"},
		{"poll without wait", []string{"drain", "node2", "--poll", "2s"}, "--poll only applies with --wait"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := kvctl(t, at(cl, tc.args...))
			wantCode(t, r, 2)
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q, want %q and a --help hint", r.stderr, tc.want)
			}
		})
	}
	if n := len(cl.Calls(ringkvv1connect.ClusterDrainProcedure)); n != 0 {
		t.Fatalf("usage errors reached the server: %d drain calls", n)
	}
}

func TestNodeCompletion(t *testing.T) {
	cl := elasticCluster(t)
	for _, cmd := range []string{"drain", "undrain", "remove"} {
		r := kvctl(t, at(cl, "__complete", cmd, "node"))
		wantCode(t, r, 0)
		got := strings.Fields(r.stdout)
		if len(got) != 5 || !slices.Equal(got[:4], []string{"node1", "node2", "node3", "node4"}) || got[4] != ":4" {
			t.Fatalf("__complete %s: %q; want the four node names and no file completion", cmd, r.stdout)
		}
	}
	r := kvctl(t, at(cl, "__complete", "drain", "node2", ""))
	if got := strings.Fields(r.stdout); len(got) != 1 {
		t.Fatalf("completion after NODE offered %q, want nothing", r.stdout)
	}
	r = kvctl(t, invocation{args: []string{"--endpoints", deadAddr(t), "--timeout", "200ms", "__complete", "drain", ""}})
	wantCode(t, r, 0)
	if got := strings.Fields(r.stdout); len(got) != 1 {
		t.Fatalf("completion without a cluster offered %q, want nothing", r.stdout)
	}
}

func TestRaftMeter(t *testing.T) {
	m := newRaftMeter()
	steps := []struct {
		node string
		sent uint64
		want uint64
	}{
		{"a", 100, 0}, // the first sight is the baseline
		{"b", 50, 0},
		{"a", 150, 50},
		{"b", 80, 80},
		{"a", 10, 90}, // a restarted: its 50 are kept, 10 more since
		{"a", 30, 110},
		{"c", 1000, 110}, // a node seen late counts from then
		{"c", 1001, 111},
	}
	for i, s := range steps {
		m.observe(s.node, s.sent)
		if got := m.total(); got != s.want {
			t.Fatalf("step %d (%s=%d): total %d, want %d", i, s.node, s.sent, got, s.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {12_900_000, "12.3 MiB"}, {3 << 30, "3.0 GiB"},
		{1 << 62, "4.0 EiB"},
	}
	for _, tc := range tests {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestProgressPrinterThrottles(t *testing.T) {
	var b strings.Builder
	p := &progressPrinter{w: &b, every: 10 * time.Second}
	p.show("a1", "a", 0)
	p.show("a2", "a", time.Second)    // same state, too soon
	p.show("b1", "b", 2*time.Second)  // new state
	p.show("b2", "b", 12*time.Second) // same state, interval passed
	p.show("b3", "b", 13*time.Second) // too soon again
	p.done()
	if want := "a1 (0s)\nb1 (2s)\nb2 (12s)\n"; b.String() != want {
		t.Fatalf("printed %q, want %q", b.String(), want)
	}
}

func TestCountOn(t *testing.T) {
	details := func(pairs ...string) []*ringkvv1.Replica {
		var out []*ringkvv1.Replica
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, &ringkvv1.Replica{Node: pairs[i], Suffrage: pairs[i+1]})
		}
		return out
	}
	tests := []struct {
		name  string
		parts []*ringkvv1.Partition
		want  drainLeft
	}{
		{"voter and leader", []*ringkvv1.Partition{{Leader: "n4", Voters: []string{"n4", "n1"}}}, drainLeft{replicas: 1, leaders: 1}},
		{"nonvoter", []*ringkvv1.Partition{{Leader: "n1", Voters: []string{"n1"}, Nonvoters: []string{"n4"}}}, drainLeft{replicas: 1}},
		{"elsewhere", []*ringkvv1.Partition{{Leader: "n1", Voters: []string{"n1", "n2"}}}, drainLeft{}},
		{"older node: replica details", []*ringkvv1.Partition{
			{Leader: "n1", Replicas: []string{"n1", "n4"}, ReplicaDetails: details("n1", "voter", "n4", "nonvoter")},
		}, drainLeft{replicas: 1}},
		// Nobody reported it: the answering node lists the desired replicas,
		// which need not be the actual ones.
		{"unreported", []*ringkvv1.Partition{{Replicas: []string{"n1", "n2"}}}, drainLeft{unreported: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := countOn(tc.parts, "n4")
			if got != tc.want {
				t.Fatalf("countOn = %+v, want %+v", got, tc.want)
			}
			if got.done() != (tc.want == drainLeft{}) {
				t.Fatalf("done() = %v for %+v", got.done(), got)
			}
		})
	}
}
