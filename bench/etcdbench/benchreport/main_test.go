package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// benchJSON is one bench run's -o json output, 64 clients for 10 s.
func benchJSON(ops, opsPerSec, p50, p99 float64) string {
	b, _ := json.Marshal(map[string]any{"clients": 64, "ops": ops, "ops_per_sec": opsPerSec, "p50_ms": p50, "p99_ms": p99, "duration_s": 10})
	return string(b)
}

// reportJSON is compare.json as a test reads it.
type reportJSON struct {
	Meta   map[string]string  `json:"meta"`
	Rounds int                `json:"rounds"`
	Rows   []row              `json:"rows"`
	Idle   map[string]float64 `json:"idle_cpu_pct_of_core"`
}

// runReport runs benchreport on dir and returns compare.json, its rows by
// workload and the printed table.
func runReport(t *testing.T, dir string) (reportJSON, map[string]row, *strings.Builder) {
	t.Helper()
	var out strings.Builder
	if err := run(dir, &out); err != nil {
		t.Fatal(err)
	}
	var got reportJSON
	b, err := os.ReadFile(filepath.Join(dir, "compare.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	rows := map[string]row{}
	for _, r := range got.Rows {
		rows[r.Workload] = r
	}
	return got, rows, &out
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "meta.txt"), "duration=10s\nclients=64\n")
	write(t, filepath.Join(dir, "etcd", "put.json"), benchJSON(1000, 100, 10, 40))
	write(t, filepath.Join(dir, "ringkv", "put.json"), benchJSON(2500, 250, 4, 30))
	write(t, filepath.Join(dir, "etcd", "get-strong.json"), benchJSON(1000, 100, 10, 40))
	write(t, filepath.Join(dir, "ringkv", "get-strong.json"), benchJSON(3000, 300, 4, 50)) // p99 worse
	write(t, filepath.Join(dir, "etcd", "put-1.json"), benchJSON(100, 10, 1, 2))
	write(t, filepath.Join(dir, "ringkv", "put.cpu"), "250 100\n")
	write(t, filepath.Join(dir, "ringkv", "idle.cpu"), "30 100 10\n") // 0.3 s in 10 s
	write(t, filepath.Join(dir, "load", "etcd-put.txt"), " 06:25:56 up 22 min,  0 user,  load average: 3.06, 6.81, 5.39\n")

	got, rows, out := runReport(t, dir)
	tests := []struct {
		workload, met string
		ratio         float64 // 0: none
	}{
		{"put", "yes", 2.5},
		{"get-strong", "no", 3},  // ops/s met, p99 not
		{"put-1", "-", 0},        // no RingKV result
		{"mixed-strong", "-", 0}, // no target, no data
	}
	for _, tc := range tests {
		r := rows[tc.workload]
		if r.Met != tc.met || (tc.ratio == 0) != (r.Ratio == nil) || (r.Ratio != nil && *r.Ratio != tc.ratio) {
			t.Errorf("%s: met %q ratio %v, want %q and %v", tc.workload, r.Met, r.Ratio, tc.met, tc.ratio)
		}
	}
	if r := rows["put"]; r.RingKV.CPUMicrosPerOp == nil || *r.RingKV.CPUMicrosPerOp != 1000 || r.Etcd.Load1 == nil || *r.Etcd.Load1 != 3.06 {
		t.Errorf("put: cpu/op %v load1 %v, want 1000 us and 3.06", r.RingKV.CPUMicrosPerOp, r.Etcd.Load1)
	}
	if _, ok := got.Idle["etcd"]; got.Idle["ringkv"] != 3 || ok || !strings.Contains(out.String(), "RingKV 3.0%") {
		t.Errorf("idle %v, want RingKV at 3%% of a core and no etcd; table:\n%s", got.Idle, out.String())
	}
	if got.Meta["duration"] != "10s" || !strings.Contains(out.String(), "put, 64 clients") {
		t.Errorf("meta %v; table:\n%s", got.Meta, out.String())
	}
	md, err := os.ReadFile(filepath.Join(dir, "compare.md"))
	if err != nil || !strings.Contains(string(md), "| put, 64 clients | 100 | 250 | 2.50x |") {
		t.Errorf("compare.md lacks the put row: %v\n%s", err, md)
	}
}

// With round folders, each system's numbers are the mean over its rounds,
// CPU per op is weighted by operations, and every round's ratio is kept.
func TestReportRounds(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "meta.txt"), "rounds=2\n")
	r1, r2 := filepath.Join(dir, "round-1"), filepath.Join(dir, "round-2")
	// Round 1: the machine is fast for etcd; round 2 for RingKV.
	write(t, filepath.Join(r1, "etcd", "put.json"), benchJSON(1500, 150, 10, 40))
	write(t, filepath.Join(r1, "ringkv", "put.json"), benchJSON(2000, 200, 6, 30))
	write(t, filepath.Join(r2, "etcd", "put.json"), benchJSON(1000, 100, 12, 50))
	write(t, filepath.Join(r2, "ringkv", "put.json"), benchJSON(4000, 400, 4, 20))
	write(t, filepath.Join(r1, "ringkv", "put.cpu"), "100 100\n") // 1 s over 2000 ops: 500 us
	write(t, filepath.Join(r2, "ringkv", "put.cpu"), "100 100\n") // 1 s over 4000 ops: 250 us
	write(t, filepath.Join(r1, "ringkv", "idle.cpu"), "20 100 10\n")
	write(t, filepath.Join(r2, "ringkv", "idle.cpu"), "40 100 10\n")
	// get-strong ran in round 1 only: the mean is that round's.
	write(t, filepath.Join(r1, "etcd", "get-strong.json"), benchJSON(1000, 100, 10, 40))
	write(t, filepath.Join(r1, "ringkv", "get-strong.json"), benchJSON(1500, 150, 5, 30))

	got, rows, out := runReport(t, dir)
	put := rows["put"]
	if got.Rounds != 2 || put.Ratio == nil || *put.Ratio != 2.4 || put.Met != "yes" ||
		len(put.RoundRatios) != 2 || put.RoundRatios[0] != 200.0/150 || put.RoundRatios[1] != 4 {
		t.Fatalf("rounds %d, put row %+v (ratio %v); want 2 rounds, ratio 300/125 = 2.4 met, round ratios 1.33 and 4", got.Rounds, put, put.Ratio)
	}
	if k := put.RingKV; k.Result.P99Ms != 25 || k.Result.Ops != 6000 || k.CPUMicrosPerOp == nil || *k.CPUMicrosPerOp != 2e6/6000 {
		t.Errorf("RingKV put side %+v, cpu/op %v; want p99 25, 6000 ops, 333 us/op", k.Result, k.CPUMicrosPerOp)
	}
	if r := rows["get-strong"]; r.Ratio == nil || *r.Ratio != 1.5 || len(r.RoundRatios) != 1 || r.Met != "no" {
		t.Errorf("get-strong %+v; want round 1's ratio 1.5, not met", r)
	}
	if got.Idle["ringkv"] != 3 {
		t.Errorf("idle %v; want the mean, 3%%", got.Idle)
	}
	if s := out.String(); !strings.Contains(s, "2.40x (1.33x, 4.00x)") || !strings.Contains(s, "2 rounds") {
		t.Errorf("table lacks the round ratios or the rounds line:\n%s", s)
	}
}
