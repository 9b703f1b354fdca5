package integration

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKvctlRoundTrip drives put, get, del and cas through the kvctl binary,
// each step against another node, and checks the table and JSON output of
// every command against DESIGN.md section 5.
func TestKvctlRoundTrip(t *testing.T) {
	c := newCluster(t, 3)
	ep := c.endpoints
	okVersion := regexp.MustCompile(`^OK version (\d+)\n$`)

	r := c.kvctlAt(ep(0), "put", "greeting", "hello")
	m := okVersion.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("put via n1: %v; want exit 0 and \"OK version N\"", r)
	}
	v1, _ := strconv.ParseUint(m[1], 10, 64)
	for i := range c.nodes {
		if r := c.kvctlAt(ep(i), "get", "greeting"); r.code != 0 || r.stdout != "hello\n" {
			t.Errorf("get via %s: %v; want \"hello\"", c.nodes[i].name, r)
		}
	}

	t.Run("get -o json", func(t *testing.T) {
		var strong map[string]any
		c.kvctlJSON(ep(1), &strong, "get", "greeting")
		requireFields(t, "get", strong, "key", "value", "version", "served_by", "applied_index", "leader")
		if strong["key"] != "greeting" || strong["value"] != "hello" || strong["version"] != float64(v1) {
			t.Errorf("strong get: %v; want key greeting, value hello, version %d", strong, v1)
		}
		if strong["leader"] != true || !slices.Contains(c.names(), strong["served_by"].(string)) {
			t.Errorf("strong get: served_by %v leader %v; want a node that was leader", strong["served_by"], strong["leader"])
		}
		if idx, _ := strong["applied_index"].(float64); idx < float64(v1) {
			t.Errorf("strong get: applied_index %v is below the key's version %d", strong["applied_index"], v1)
		}
		// Every node hosts every partition (3 nodes, 3 replicas), so an
		// eventual read through n3 alone is served by n3.
		// n3 may not have learned the commit yet (eventual reads trail by up
		// to --raft-commit-timeout when idle): poll until it has the key.
		var eventual map[string]any
		found := poll(10*time.Second, 50*time.Millisecond, func() bool {
			r := c.kvctlAt(ep(2), "-o", "json", "get", "greeting", "--consistency", "eventual")
			return r.code == 0 && decodeOne(r.stdout, &eventual) == nil
		})
		if !found {
			t.Fatalf("eventual get via n3 never found the key: %v", eventual)
		}
		requireFields(t, "eventual get", eventual, "served_by", "applied_index", "leader")
		if eventual["served_by"] != "n3" {
			t.Errorf("eventual get via n3 only: served_by %v, want n3: %v", eventual["served_by"], eventual)
		}
	})

	t.Run("cas", func(t *testing.T) {
		swapped := regexp.MustCompile(`^swapped \(version (\d+)\)\n$`)
		r := c.kvctlAt(ep(2), "cas", "greeting", "hello", "world")
		m := swapped.FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil {
			t.Fatalf("cas by value via n3: %v; want \"swapped (version N)\"", r)
		}
		v2, _ := strconv.ParseUint(m[1], 10, 64)
		if v2 <= v1 {
			t.Errorf("cas: new version %d is not above %d", v2, v1)
		}
		want := "not swapped: current value \"world\" version " + m[1] + "\n"
		if r := c.kvctlAt(ep(0), "cas", "greeting", "hello", "again"); r.code != 0 || r.stdout != want {
			t.Errorf("cas with a stale value via n1: %v; want exit 0 and %q", r, want)
		}
		if r := c.kvctlAt(ep(1), "cas", "greeting", "stale", "--expect-version", strconv.FormatUint(v1, 10)); r.code != 0 || !strings.HasPrefix(r.stdout, "not swapped") {
			t.Errorf("cas --expect-version %d (stale) via n2: %v; want not swapped", v1, r)
		}
		r = c.kvctlAt(ep(1), "cas", "greeting", "by-version", "--expect-version", m[1])
		if r.code != 0 || !swapped.MatchString(r.stdout) {
			t.Errorf("cas --expect-version %s via n2: %v; want swapped", m[1], r)
		}
		if r := c.kvctlAt(ep(0), "cas", "greeting", "x", "--create"); r.code != 0 || !strings.HasPrefix(r.stdout, "not swapped") {
			t.Errorf("cas --create on an existing key: %v; want not swapped", r)
		}
		var created map[string]any
		c.kvctlJSON(ep(0), &created, "cas", "lock", "me", "--create")
		if created["succeeded"] != true {
			t.Errorf("cas --create of a new key: %v; want succeeded", created)
		}
		for i := range c.nodes {
			if r := c.kvctlAt(ep(i), "get", "greeting"); r.stdout != "by-version\n" {
				t.Errorf("get greeting via %s after cas: %v", c.nodes[i].name, r)
			}
			if r := c.kvctlAt(ep(i), "get", "lock"); r.stdout != "me\n" {
				t.Errorf("get lock via %s after cas --create: %v", c.nodes[i].name, r)
			}
		}
	})

	t.Run("del and missing keys", func(t *testing.T) {
		if r := c.kvctlAt(ep(1), "del", "greeting"); r.code != 0 || r.stdout != "deleted\n" {
			t.Errorf("del via n2: %v", r)
		}
		for i := range c.nodes {
			r := c.kvctlAt(ep(i), "get", "greeting")
			if r.code != 1 || !strings.Contains(r.stderr, "key not found") || r.stdout != "" {
				t.Errorf("get of a deleted key via %s: %v; want exit 1, \"key not found\" on stderr, nothing on stdout", c.nodes[i].name, r)
			}
		}
		if r := c.kvctlAt(ep(2), "del", "greeting"); r.code != 0 || !strings.Contains(r.stdout, "no such key") {
			t.Errorf("del of a missing key: %v; want exit 0 saying no such key", r)
		}
		r := c.kvctlAt(ep(0), "-o", "json", "get", "never-written")
		var doc map[string]any
		if r.code != 1 || !strings.Contains(r.stderr, "key not found") || decodeOne(r.stdout, &doc) != nil || doc["code"] != "not_found" {
			t.Errorf("get -o json of a missing key: %v; want exit 1, key not found on stderr, one JSON document with code not_found", r)
		}
	})

	t.Run("members", func(t *testing.T) {
		r := c.kvctl("members")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
			t.Fatalf("members: %v; want a header and 3 rows", r)
		}
		for _, p := range c.nodes {
			// Columns may be added; the row must hold these cells.
			if !slices.ContainsFunc(lines[1:], func(l string) bool {
				f := strings.Fields(l)
				return len(f) > 0 && f[0] == p.name && slices.Contains(f, "alive") && slices.Contains(f, p.clientAddr)
			}) {
				t.Errorf("members table has no row \"%s alive %s\":\n%s", p.name, p.clientAddr, r.stdout)
			}
		}
		var members []map[string]any
		c.kvctlJSON(ep(1), &members, "members")
		if len(members) != 3 {
			t.Fatalf("members -o json: %d members, want 3: %v", len(members), members)
		}
		for _, m := range members {
			requireFields(t, "member", m, "name", "status", "client_addr", "peer_addr", "gossip_addr")
			p := c.byName(m["name"].(string))
			if p == nil || m["status"] != "alive" || m["client_addr"] != p.clientAddr || m["peer_addr"] != p.peerAddr || m["gossip_addr"] != p.gossipAddr {
				t.Errorf("member %v does not match the cluster's nodes", m)
			}
		}
	})

	t.Run("partitions", func(t *testing.T) {
		// Leadership may move (leader balance) between the calls, so a
		// partition briefly without a known leader is waited out.
		var parts []map[string]any
		var problem string
		ok := poll(20*time.Second, 250*time.Millisecond, func() bool {
			parts = nil
			c.kvctlJSON(ep(2), &parts, "partitions")
			problem = c.checkPartitionsJSON(parts)
			return problem == ""
		})
		if !ok {
			t.Fatalf("partitions -o json: %s\n%v", problem, parts)
		}
		for _, p := range parts {
			requireFields(t, "partition", p, "id", "leader", "replicas")
		}
		r := c.kvctl("partitions")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 17 || !strings.HasPrefix(lines[0], "ID") {
			t.Fatalf("partitions: %v; want a header and 16 rows", r)
		}
		replicas := regexp.MustCompile(`^n\d\+?,n\d\+?,n\d\+?$`)
		for i, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != strconv.Itoa(i) || !slices.ContainsFunc(f, replicas.MatchString) {
				t.Errorf("partitions row %q: want id %d, leader and 3 replicas", l, i)
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		r := c.kvctl("status")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDPOINT") {
			t.Fatalf("status: %v; want a header and 3 rows", r)
		}
		for _, p := range c.nodes {
			if !slices.ContainsFunc(lines[1:], func(l string) bool {
				f := strings.Fields(l)
				return len(f) > 0 && f[0] == p.clientAddr && slices.Contains(f, p.name) && slices.Contains(f, "yes")
			}) {
				t.Errorf("status table has no ready row for %s at %s:\n%s", p.name, p.clientAddr, r.stdout)
			}
		}
		var st []map[string]any
		c.kvctlJSON(ep(), &st, "status")
		if len(st) != 3 {
			t.Fatalf("status -o json: %d entries, want 3", len(st))
		}
		for _, s := range st {
			if s["ready"] != true || s["partition_count"] != float64(16) || s["members_alive"] != float64(3) {
				t.Errorf("status entry %v: want ready, 16 partitions, 3 members alive", s)
			}
		}
	})
}

// checkPartitionsJSON returns what is wrong with `kvctl partitions -o json`
// output for a healthy cluster, or "".
func (c *cluster) checkPartitionsJSON(parts []map[string]any) string {
	if len(parts) != 16 {
		return "want 16 partitions, got " + strconv.Itoa(len(parts))
	}
	seen := map[float64]bool{}
	for _, p := range parts {
		id, _ := p["id"].(float64)
		seen[id] = true
		leader, _ := p["leader"].(string)
		if c.byName(leader) == nil {
			return "partition " + strconv.Itoa(int(id)) + " has leader " + strconv.Quote(leader)
		}
		reps, _ := p["replicas"].([]any)
		var names []string
		for _, r := range reps {
			s, _ := r.(string)
			names = append(names, s)
		}
		slices.Sort(names)
		if !slices.Equal(names, c.names()) {
			return "partition " + strconv.Itoa(int(id)) + " has replicas " + strings.Join(names, ",")
		}
	}
	for id := range 16 {
		if !seen[float64(id)] {
			return "partition " + strconv.Itoa(id) + " is missing"
		}
	}
	return ""
}

// requireFields fails unless doc has every field.
func requireFields(t *testing.T, what string, doc map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if _, ok := doc[f]; !ok {
			t.Errorf("%s JSON lacks field %q: %v", what, f, doc)
		}
	}
}

// names returns the node names, sorted.
func (c *cluster) names() []string {
	var out []string
	for _, p := range c.nodes {
		out = append(out, p.name)
	}
	slices.Sort(out)
	return out
}

// byName returns the node called name, or nil.
func (c *cluster) byName(name string) *proc {
	for _, p := range c.nodes {
		if p.name == name {
			return p
		}
	}
	return nil
}
