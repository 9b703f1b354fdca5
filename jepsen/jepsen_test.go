package jepsen

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/jepsen/checker"
	"github.com/ringkv/ringkv/jepsen/cluster"
	"github.com/ringkv/ringkv/jepsen/nemesis"
)

// The tests here run real containers. They are skipped unless RINGKV_JEPSEN=1
// (root and docker.io needed), so `make test` never needs Docker.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("RINGKV_JEPSEN") != "1" {
		t.Skip("set RINGKV_JEPSEN=1 to run the Docker fault tests (needs root and docker.io)")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(t *testing.T) Config {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cfg := TestConfig()
	cfg.Src, cfg.Dockerfile = root, filepath.Join(root, "jepsen", "Dockerfile")
	cfg.RunsDir = filepath.Join(root, "jepsen", "runs", "test-"+strings.ReplaceAll(t.Name(), "/", "_"))
	cfg.Out = testWriter{t}
	cfg.Seed = 11
	return cfg
}

func TestSmokeRunPassesAndRechecks(t *testing.T) {
	requireDocker(t)
	cfg := testConfig(t)
	cfg.Nemeses = [][]nemesis.Kind{{nemesis.IsolateLeader, nemesis.KillOne}}
	s, err := NewSuite(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Runs) != 1 {
		t.Fatalf("%d runs, want 1", len(sum.Runs))
	}
	r := sum.Runs[0]
	if !sum.Passed || r.Verdict != "PASS" {
		t.Fatalf("run failed: %s %s; see %s", r.Verdict, r.Err, r.Dir)
	}
	if r.Ops.OK < 1000 || r.Windows < 1 {
		t.Fatalf("only %d ok ops and %d nemesis windows", r.Ops.OK, r.Windows)
	}
	for _, f := range []string{"seed", "run.json", "nemesis.jsonl", "final.json", "report.json", "history.html", "logs/n1.log", "history/client-000.jsonl"} {
		if _, err := os.Stat(filepath.Join(r.Dir, f)); err != nil {
			t.Errorf("run folder lacks %s: %v", f, err)
		}
	}
	rep, err := CheckDir(r.Dir, checker.Config{Timeout: time.Minute, Workers: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid() || rep.Ops.Total() != r.Ops.Total() {
		t.Fatalf("re-check: valid=%v with %d ops, first check had %d", rep.Valid(), rep.Ops.Total(), r.Ops.Total())
	}
}

// TestIsolationCutsGossip checks the fault primitive itself: an isolated
// node is seen as failed by the others, and healing brings it back.
func TestIsolationCutsGossip(t *testing.T) {
	requireDocker(t)
	cfg := testConfig(t)
	unlock, err := lock(LockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	s, err := NewSuite(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	daemon, err := ensureDaemonFor(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Stop()
	if err := s.BuildImage(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(ctx, s.docker, cluster.Config{Prefix: cfg.Prefix, Image: cfg.Image, Nodes: 3, Subnet: cfg.Subnet,
		Partitions: 16, Replicas: 3, DataDir: t.TempDir()})
	if c != nil {
		defer c.Destroy(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	cc := client.DefaultConfig()
	cc.Endpoints = []string{c.Nodes[1].ClientAddr()}
	cl, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	statusOfN1 := func() string {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ms, err := cl.Members(mctx)
		if err != nil {
			return "error: " + err.Error()
		}
		for _, m := range ms {
			if m.GetName() == "n1" {
				return m.GetStatus()
			}
		}
		return "missing"
	}
	waitFor := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			st := statusOfN1()
			if ok(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("n1 never became %s as n2 sees it; last status %q", what, st)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitFor("alive", func(s string) bool { return s == "alive" })
	if err := c.Partition(ctx, [][]int{{0}, {1, 2}}); err != nil {
		t.Fatal(err)
	}
	waitFor("suspect or dead", func(s string) bool { return s == "suspect" || s == "dead" })
	if err := c.HealNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor("alive again", func(s string) bool { return s == "alive" })
}
