package jepsen

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/jepsen/checker"
	"github.com/ringkv/ringkv/jepsen/history"
)

func TestMainRejectsBadUsage(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"unknown mode", []string{"run", "--mode", "gentle"}, "unknown mode"},
		{"unknown nemesis", []string{"run", "--nemesis", "meteor"}, "unknown fault"},
		{"bad fault time", []string{"run", "--fault-time", "9s-3s"}, "MIN <= MAX"},
		{"check without a folder", []string{"check"}, "usage"},
		{"check of a missing folder", []string{"check", filepath.Join(t.TempDir(), "nope")}, "no client-*.jsonl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, &out, &errb)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("stderr %q does not mention %q", errb.String(), tc.want)
			}
		})
	}
}

// writeRun saves a hand-made run folder: a put, then a read of the value put
// (or, stale, of nothing).
func writeRun(t *testing.T, stale bool) string {
	t.Helper()
	dir := t.TempDir()
	rec := history.NewRecorder(time.Now())
	put := rec.Begin(0, "r/1", history.KindPut)
	put.Value, put.Partition = "0-1", 0
	rec.End(put, history.OutcomeOK, nil)
	get := rec.Begin(1, "r/1", history.KindGet)
	get.Partition = 0
	if !stale {
		get.Found, get.Out = true, "0-1"
	}
	rec.End(get, history.OutcomeOK, nil)
	if err := history.WriteDir(filepath.Join(dir, "history"), rec.Ops()); err != nil {
		t.Fatal(err)
	}
	ws := []history.Window{{Nemesis: "isolate-node", Detail: "n1 alone", Start: 1, End: 2}}
	if err := history.WriteWindows(filepath.Join(dir, "nemesis.jsonl"), ws); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheckCommandRechecksASavedRun(t *testing.T) {
	for _, stale := range []bool{false, true} {
		dir := writeRun(t, stale)
		var out, errb bytes.Buffer
		code := Main(context.Background(), []string{"check", dir, "--check-timeout", "10s"}, &out, &errb)
		want := 0
		if stale {
			want = 1
		}
		if code != want {
			t.Fatalf("stale=%v: exit %d, want %d; out: %s; err: %s", stale, code, want, out.String(), errb.String())
		}
		for _, f := range []string{"report.json", "violations.txt", "history.html"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("stale=%v: check did not write %s", stale, f)
			}
		}
		if stale && !strings.Contains(out.String(), "not-linearizable") {
			t.Errorf("stale read not named in the output: %s", out.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "violations", "r_1.html")); stale && err != nil {
			t.Errorf("no page for the illegal key: %v", err)
		}
	}
}

func TestParseRange(t *testing.T) {
	lo, hi, err := parseRange("2s-4500ms")
	if err != nil || lo != 2*time.Second || hi != 4500*time.Millisecond {
		t.Fatalf("parseRange = %v, %v, %v", lo, hi, err)
	}
	for _, bad := range []string{"2s", "x-3s", "3s-1s", "0s-1s"} {
		if _, _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) accepted", bad)
		}
	}
}

func TestLockIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock(path); err == nil {
		t.Fatal("a second lock was granted while the first is held")
	}
	unlock()
	again, err := lock(path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again()
}

func TestConfigsValidate(t *testing.T) {
	for name, c := range map[string]Config{"full": DefaultConfig(), "smoke": SmokeConfig(), "faulty": FaultyConfig(), "test": TestConfig()} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	c := SmokeConfig()
	c.Partitions = 8
	if c.Validate() == nil {
		t.Error("8 partitions accepted; the suite needs at least 16")
	}
}

func TestVerdictsOfABrokenBuild(t *testing.T) {
	faulty := FaultyConfig()
	faulty.Runs = 3
	clean := &checker.Report{}
	stale := &checker.Report{Violations: []checker.Violation{{Kind: checker.KindNotLinearizable}}}
	run := func(rep *checker.Report, err string) RunResult {
		r := RunResult{Report: rep, Err: err, ByKind: map[string]int{}}
		if rep != nil {
			for _, v := range rep.Violations {
				r.ByKind[v.Kind]++
			}
		}
		r.Verdict = runVerdict(faulty, r)
		return r
	}
	caught, missed, broken := run(stale, ""), run(clean, ""), run(nil, "docker died")
	if caught.Verdict != VerdictCaught || missed.Verdict != VerdictMissed || broken.Verdict != VerdictError {
		t.Fatalf("verdicts %s %s %s, want CAUGHT MISSED ERROR", caught.Verdict, missed.Verdict, broken.Verdict)
	}
	cases := []struct {
		name string
		runs []RunResult
		want bool
	}{
		{"nothing caught", []RunResult{missed, missed, missed}, false},
		{"one caught", []RunResult{missed, caught, missed}, true},
		{"all caught", []RunResult{caught, caught, caught}, true},
		{"harness error", []RunResult{caught, broken, caught}, false},
		{"runs missing (interrupted)", []RunResult{caught}, false},
	}
	for _, tc := range cases {
		if got := passed(faulty, tc.runs); got != tc.want {
			t.Errorf("%s: passed = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The same results against a correct build's expectation.
	full := DefaultConfig()
	full.Runs = 1
	ok := RunResult{Report: clean}
	ok.Verdict = runVerdict(full, ok)
	bad := RunResult{Report: stale, ByKind: map[string]int{checker.KindNotLinearizable: 1}}
	bad.Verdict = runVerdict(full, bad)
	if ok.Verdict != VerdictPass || bad.Verdict != VerdictFail || !passed(full, []RunResult{ok}) || passed(full, []RunResult{bad}) {
		t.Fatalf("correct-build verdicts: %s %s", ok.Verdict, bad.Verdict)
	}
}

func TestFaultTagIsChecked(t *testing.T) {
	var out bytes.Buffer
	faulty := FaultyConfig()
	if err := checkFaultTag(faulty, []string{"netgo", "osusergo"}, &out); err == nil || !strings.Contains(err.Error(), FaultTag) {
		t.Fatalf("a faulty suite accepted a kvd without the fault tag: %v", err)
	}
	if err := checkFaultTag(faulty, []string{"netgo", FaultTag}, &out); err != nil {
		t.Fatal(err)
	}
	if err := checkFaultTag(DefaultConfig(), []string{FaultTag}, &out); err != nil || !strings.Contains(out.String(), "warning") {
		t.Fatalf("a normal suite on the broken kvd: err %v, output %q", err, out.String())
	}
}
