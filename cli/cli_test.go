package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/client/clienttest"
)

// result is what one kvctl run produced.
type result struct {
	stdout, stderr string
	code           int
	err            error
}

// invocation is one kvctl run: arguments, environment and stdin.
type invocation struct {
	args  []string
	env   map[string]string
	stdin string
	tty   bool
}

func kvctl(t *testing.T, inv invocation) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, inv.args, env{
		stdin:      strings.NewReader(inv.stdin),
		stdout:     &stdout,
		stderr:     &stderr,
		getenv:     func(k string) string { return inv.env[k] },
		isTerminal: func(io.Writer) bool { return inv.tty },
	})
	return result{stdout.String(), stderr.String(), ExitCode(err), err}
}

// at runs kvctl against the fake cluster's endpoints.
func at(cl *clienttest.Cluster, args ...string) invocation {
	return invocation{args: append([]string{"--endpoints", strings.Join(cl.Endpoints(), ","), "--timeout", "5s"}, args...)}
}

// oneJSON decodes stdout, which must hold exactly one JSON document.
func oneJSON[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("stdout is not one JSON document of %T: %v\nstdout: %s\nstderr: %s", v, err, r.stdout, r.stderr)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		t.Fatalf("stdout holds more than one JSON document: %s", r.stdout)
	}
	return v
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d (err %v)\nstdout: %s\nstderr: %s", r.code, code, r.err, r.stdout, r.stderr)
	}
}

func TestKeyCommandsTable(t *testing.T) {
	cl := clienttest.NewCluster(t, 3, 8)
	r := kvctl(t, at(cl, "put", "greeting", "hello"))
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "OK version ") {
		t.Fatalf("put printed %q, want OK version N", r.stdout)
	}
	r = kvctl(t, at(cl, "get", "greeting"))
	wantCode(t, r, 0)
	if r.stdout != "hello\n" {
		t.Fatalf("get printed %q, want the raw value and a newline", r.stdout)
	}
	r = kvctl(t, at(cl, "get", "greeting", "--consistency", "eventual"))
	wantCode(t, r, 0)
	if r.stdout != "hello\n" {
		t.Fatalf("eventual get printed %q", r.stdout)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cas by value, mismatch", []string{"cas", "greeting", "nope", "x"}, `not swapped: current value "hello" version `},
		{"cas by value", []string{"cas", "greeting", "hello", "hi"}, "swapped (version "},
		{"cas by version, stale", []string{"cas", "greeting", "again", "--expect-version", "1"}, `not swapped: current value "hi"`},
		{"cas create on existing key", []string{"cas", "greeting", "x", "--create"}, "not swapped"},
		{"cas create", []string{"cas", "fresh", "new", "--create"}, "swapped (version "},
		{"del", []string{"del", "fresh"}, "deleted\n"},
		{"del missing", []string{"del", "fresh"}, "nothing deleted: no such key\n"},
		{"cas on a missing key", []string{"cas", "fresh", "a", "b"}, "not swapped: the key does not exist\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := kvctl(t, at(cl, tc.args...))
			wantCode(t, r, 0)
			if !strings.HasPrefix(r.stdout, tc.want) {
				t.Fatalf("stdout %q, want prefix %q", r.stdout, tc.want)
			}
		})
	}
	v, _ := cl.Value([]byte("greeting"))
	r = kvctl(t, at(cl, "get", "greeting", "-o", "json"))
	got := oneJSON[map[string]any](t, r)
	r = kvctl(t, at(cl, "cas", "greeting", "latest", "--expect-version", jsonNumber(got["version"])))
	wantCode(t, r, 0)
	if string(v) != "hi" || !strings.HasPrefix(r.stdout, "swapped") {
		t.Fatalf("cas --expect-version with the current version: %q (value was %q)", r.stdout, v)
	}
}

func jsonNumber(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestKeyCommandsJSON(t *testing.T) {
	cl := clienttest.NewCluster(t, 3, 8)
	cl.SetLeader(1)
	r := kvctl(t, at(cl, "-o", "json", "put", "k", "v1"))
	wantCode(t, r, 0)
	put := oneJSON[struct {
		Key     string `json:"key"`
		Version uint64 `json:"version"`
	}](t, r)
	if put.Key != "k" || put.Version == 0 {
		t.Fatalf("put JSON %+v", put)
	}

	r = kvctl(t, at(cl, "-o", "json", "get", "k"))
	wantCode(t, r, 0)
	get := oneJSON[map[string]any](t, r)
	want := map[string]any{"key": "k", "value": "v1", "version": float64(put.Version), "served_by": "node2", "leader": true}
	for f, w := range want {
		if get[f] != w {
			t.Fatalf("get JSON field %s = %v, want %v (doc %v)", f, get[f], w, get)
		}
	}
	if _, ok := get["applied_index"].(float64); !ok {
		t.Fatalf("get JSON lacks applied_index: %v", get)
	}

	r = kvctl(t, at(cl, "-o", "json", "cas", "k", "wrong", "v2"))
	wantCode(t, r, 0)
	cas := oneJSON[map[string]any](t, r)
	if cas["succeeded"] != false || cas["current_value"] != "v1" || cas["current_exists"] != true || cas["current_version"] != float64(put.Version) {
		t.Fatalf("failed cas JSON %v", cas)
	}
	r = kvctl(t, at(cl, "-o", "json", "cas", "k", "v1", "v2"))
	cas = oneJSON[map[string]any](t, r)
	if cas["succeeded"] != true || cas["version"].(float64) <= float64(put.Version) {
		t.Fatalf("cas JSON %v", cas)
	}
	r = kvctl(t, at(cl, "-o", "json", "del", "k"))
	if del := oneJSON[map[string]any](t, r); del["deleted"] != true {
		t.Fatalf("del JSON %v", del)
	}
	r = kvctl(t, at(cl, "-o", "json", "del", "k"))
	wantCode(t, r, 0)
	if del := oneJSON[map[string]any](t, r); del["deleted"] != false {
		t.Fatalf("del of a missing key JSON %v", del)
	}
}

func TestMissingKey(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	r := kvctl(t, at(cl, "get", "nope"))
	wantCode(t, r, 1)
	if r.stdout != "" || r.stderr != "kvctl: key not found\n" {
		t.Fatalf("stdout %q stderr %q; want nothing and 'kvctl: key not found'", r.stdout, r.stderr)
	}
	r = kvctl(t, at(cl, "-o", "json", "get", "nope"))
	wantCode(t, r, 1)
	doc := oneJSON[map[string]string](t, r)
	if doc["error"] != "key not found" || doc["code"] != "not_found" {
		t.Fatalf("JSON %v", doc)
	}
	if !strings.Contains(r.stderr, "key not found") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestServerErrors(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	long := strings.Repeat("k", 5000)
	r := kvctl(t, at(cl, "put", long, "v"))
	wantCode(t, r, 1)
	if want := "kvctl: invalid argument: key is 5000 bytes; the limit is 4096 bytes\n"; r.stderr != want {
		t.Fatalf("stderr %q, want %q", r.stderr, want)
	}
	r = kvctl(t, at(cl, "-o", "json", "put", long, "v"))
	if doc := oneJSON[map[string]string](t, r); doc["code"] != "invalid_argument" || !strings.Contains(doc["error"], "limit is 4096") {
		t.Fatalf("JSON %v", doc)
	}

	cl.SetHook(func(ctx context.Context, c clienttest.Call) error {
		if c.Procedure == ringkvv1connect.KVPutProcedure {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	// 1s: the first attempt must reach the node before the timeout, or
	// nothing was sent and the put is merely unavailable.
	r = kvctl(t, invocation{args: []string{"--endpoints", cl.Nodes[0].Addr, "--timeout", "1s", "-o", "json", "put", "k", "v"}})
	wantCode(t, r, 1)
	if doc := oneJSON[map[string]string](t, r); doc["code"] != "outcome_unknown" || !strings.Contains(doc["error"], "read the key") {
		t.Fatalf("JSON %v", doc)
	}
	if !strings.HasPrefix(r.stderr, "kvctl: outcome unknown: ") {
		t.Fatalf("stderr %q", r.stderr)
	}

	cl.SetHook(func(context.Context, clienttest.Call) error {
		return connect.NewError(connect.CodeUnavailable, errors.New("no quorum for partition 2"))
	})
	r = kvctl(t, invocation{args: []string{"--endpoints", cl.Nodes[0].Addr, "--timeout", "1s", "get", "k"}})
	wantCode(t, r, 1)
	if !strings.HasPrefix(r.stderr, "kvctl: unavailable: ") || !strings.Contains(r.stderr, "no quorum for partition 2") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{"get"}, "get takes 1 argument (KEY), got 0"},
		{"too many", []string{"put", "a", "b", "c"}, "put takes 2 arguments"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"get", "k", "--bogus"}, "unknown flag: --bogus"},
		{"bad output", []string{"-o", "yaml", "members"}, `unknown output format "yaml"`},
		{"bad consistency", []string{"get", "k", "--consistency", "weak"}, "use strong or eventual"},
		{"cas flags together", []string{"cas", "k", "v", "--create", "--expect-version", "3"}, "exclude each other"},
		{"cas with version takes two", []string{"cas", "k", "old", "new", "--expect-version", "3"}, "cas takes 2 arguments (KEY NEW)"},
		{"bad timeout", []string{"--timeout", "0s", "get", "k"}, "--timeout must be positive"},
		{"bad duration flag", []string{"--timeout", "soon", "get", "k"}, "invalid argument"},
		{"bench op", []string{"bench", "--op", "scan"}, "unknown operation"},
		{"bench ratio", []string{"bench", "--op", "mixed", "--ratio", "2"}, "--ratio must be between 0 and 1"},
		{"bad endpoint", []string{"--endpoints", "nohost", "get", "k"}, "not host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := kvctl(t, at(cl, tc.args...))
			wantCode(t, r, 2)
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q, want %q and a --help hint", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Fatalf("table-mode usage error wrote stdout: %q", r.stdout)
			}
		})
	}
	r := kvctl(t, at(cl, "-o", "json", "get"))
	wantCode(t, r, 2)
	if doc := oneJSON[map[string]string](t, r); doc["code"] != "usage" {
		t.Fatalf("JSON usage error %v", doc)
	}
	if len(cl.Calls("")) != 0 {
		t.Fatalf("usage errors reached the server: %d calls", len(cl.Calls("")))
	}
}

func TestBinaryValuesUseBase64Marker(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	value := []byte{0xff, 0x00, 'a', 0xfe}
	inv := at(cl, "put", "\xffbin", "-")
	inv.stdin = string(value)
	wantCode(t, kvctl(t, inv), 0)
	if got, _ := cl.Value([]byte("\xffbin")); !bytes.Equal(got, value) {
		t.Fatalf("stored %x, want %x from stdin", got, value)
	}
	r := kvctl(t, at(cl, "-o", "json", "get", "\xffbin"))
	wantCode(t, r, 0)
	doc := oneJSON[map[string]any](t, r)
	wantMarker := func(field string, want []byte) {
		t.Helper()
		m, ok := doc[field].(map[string]any)
		if !ok {
			t.Fatalf("%s = %v, want a base64 marker object", field, doc[field])
		}
		b, err := base64.StdEncoding.DecodeString(m["base64"].(string))
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s base64 = %v (%v), want %x", field, m, err, want)
		}
	}
	wantMarker("key", []byte("\xffbin"))
	wantMarker("value", value)
	r = kvctl(t, at(cl, "get", "\xffbin"))
	if r.stdout != string(value)+"\n" {
		t.Fatalf("table get printed %q, want the raw bytes", r.stdout)
	}
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestEndpointsFromEnvironment(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	cl.Set([]byte("k"), []byte("from-env"))
	r := kvctl(t, invocation{args: []string{"get", "k"}, env: map[string]string{EndpointsEnv: cl.Nodes[0].Addr}})
	wantCode(t, r, 0)
	if r.stdout != "from-env\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	// The flag wins over the environment.
	r = kvctl(t, invocation{
		args: []string{"--endpoints", cl.Nodes[0].Addr, "get", "k"},
		env:  map[string]string{EndpointsEnv: deadAddr(t)},
	})
	wantCode(t, r, 0)
	// And the environment wins over the default.
	dead := deadAddr(t)
	r = kvctl(t, invocation{args: []string{"--timeout", "200ms", "get", "k"}, env: map[string]string{EndpointsEnv: dead}})
	wantCode(t, r, 1)
	if !strings.Contains(r.stderr, dead) {
		t.Fatalf("stderr %q does not name the endpoint from $%s", r.stderr, EndpointsEnv)
	}
}

func TestClusterCommands(t *testing.T) {
	cl := clienttest.NewCluster(t, 3, 4)
	cl.SetMemberStatus(2, "dead")
	cl.SetPartitionLeader(3, -1)

	r := kvctl(t, at(cl, "members"))
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[3], "dead") {
		t.Fatalf("members table:\n%s", r.stdout)
	}
	if strings.Index(lines[0], "STATUS") != strings.Index(lines[1], "alive") {
		t.Fatalf("members columns are not aligned:\n%s", r.stdout)
	}
	members := oneJSON[[]map[string]any](t, kvctl(t, at(cl, "-o", "json", "members")))
	if len(members) != 3 || members[2]["status"] != "dead" {
		t.Fatalf("members JSON %v", members)
	}
	for _, f := range []string{"name", "status", "client_addr", "peer_addr", "gossip_addr"} {
		if s, _ := members[0][f].(string); s == "" {
			t.Fatalf("members JSON lacks %s: %v", f, members[0])
		}
	}
	for _, f := range []string{"draining", "removed"} {
		if members[0][f] != false {
			t.Fatalf("members JSON %s = %v, want false", f, members[0][f])
		}
	}

	r = kvctl(t, at(cl, "partitions"))
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "(none)") || !strings.Contains(r.stdout, "node1,node2,node3") {
		t.Fatalf("partitions table:\n%s", r.stdout)
	}
	parts := oneJSON[[]struct {
		ID       uint32   `json:"id"`
		Leader   string   `json:"leader"`
		Replicas []string `json:"replicas"`
	}](t, kvctl(t, at(cl, "-o", "json", "partitions")))
	if len(parts) != 4 || parts[0].Leader != "node1" || parts[3].Leader != "" || parts[3].ID != 3 || len(parts[1].Replicas) != 3 {
		t.Fatalf("partitions JSON %+v", parts)
	}

	r = kvctl(t, at(cl, "status"))
	wantCode(t, r, 0)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 4 || !strings.Contains(r.stdout, "node3") {
		t.Fatalf("status table:\n%s", r.stdout)
	}
	status := oneJSON[[]map[string]any](t, kvctl(t, at(cl, "-o", "json", "status")))
	if len(status) != 3 || status[0]["node"] != "node1" || status[0]["ready"] != true || status[0]["partitions_without_leader"] != float64(1) {
		t.Fatalf("status JSON %v", status)
	}
}

func TestStatusWithADeadEndpoint(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	dead := deadAddr(t)
	args := []string{"--endpoints", cl.Nodes[0].Addr + "," + dead, "--timeout", "2s"}
	r := kvctl(t, invocation{args: append(args, "-o", "json", "status")})
	wantCode(t, r, 1)
	status := oneJSON[[]map[string]any](t, r)
	if len(status) != 2 || status[0]["node"] != "node1" || status[1]["endpoint"] != dead || status[1]["error"] == nil {
		t.Fatalf("status JSON %v", status)
	}
	if !strings.Contains(r.stderr, "1 of 2 endpoints did not answer") {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = kvctl(t, invocation{args: append(args, "status")})
	wantCode(t, r, 1)
	if !strings.Contains(r.stdout, "ERROR") || !strings.Contains(r.stdout, dead) {
		t.Fatalf("status table:\n%s", r.stdout)
	}
}

func TestHelpAndCompletion(t *testing.T) {
	root := (&app{env: env{getenv: func(string) string { return "" }}}).rootCommand()
	for _, cmd := range root.Commands() {
		r := kvctl(t, invocation{args: []string{cmd.Name(), "--help"}})
		wantCode(t, r, 0)
		if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--endpoints") {
			t.Fatalf("%s --help lacks examples or global flags:\n%s", cmd.Name(), r.stdout)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := kvctl(t, invocation{args: []string{"completion", shell}})
		wantCode(t, r, 0)
		if !strings.Contains(r.stdout, "kvctl") {
			t.Fatalf("completion %s printed no script", shell)
		}
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"usage", usagef("bad"), 2},
		{"wrapped usage", &runError{err: usagef("bad")}, 2},
		{"not found", client.ErrNotFound, 1},
		{"other", errors.New("boom"), 1},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("%s: ExitCode = %d, want %d", tc.name, got, tc.want)
		}
	}
}
