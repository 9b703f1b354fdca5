package checker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/jepsen/history"
)

// hist builds histories by hand. Times are in milliseconds; ret < 0 marks an
// unknown outcome.
type hist struct {
	ops  []*history.Op
	next int64
}

func (h *hist) add(o *history.Op, call, ret int64) *history.Op {
	o.ID = h.next
	h.next++
	o.Call = call * 1e6
	switch {
	case ret < 0:
		o.Outcome = history.OutcomeUnknown
	case o.Outcome == "":
		o.Outcome = history.OutcomeOK
		o.Return = ret * 1e6
	default:
		o.Return = ret * 1e6
	}
	h.ops = append(h.ops, o)
	return o
}

func (h *hist) put(c int, key, v string, call, ret int64) *history.Op {
	return h.add(&history.Op{Client: c, Key: key, Kind: history.KindPut, Value: v}, call, ret)
}

func (h *hist) failedPut(c int, key, v string, call, ret int64) *history.Op {
	return h.add(&history.Op{Client: c, Key: key, Kind: history.KindPut, Value: v, Outcome: history.OutcomeFail}, call, ret)
}

func (h *hist) get(c int, key, v string, call, ret int64) *history.Op {
	return h.add(&history.Op{Client: c, Key: key, Kind: history.KindGet, Found: v != "", Out: v, Version: 1}, call, ret)
}

func (h *hist) eget(c int, key, v string, call, ret int64) *history.Op {
	return h.add(&history.Op{Client: c, Key: key, Kind: history.KindEventualGet, Found: v != "", Out: v, Node: "n1"}, call, ret)
}

// cas swaps expect -> v; ok says whether it succeeded (cur is what a failed
// one saw, "" for absent).
func (h *hist) cas(c int, key, expect, v string, ok bool, cur string, call, ret int64) *history.Op {
	return h.add(&history.Op{Client: c, Key: key, Kind: history.KindCAS, Expect: expect, Value: v,
		Succeeded: ok, CurExists: !ok && cur != "", CurValue: cur}, call, ret)
}

func kinds(r *Report) []string {
	var out []string
	for _, v := range r.Violations {
		out = append(out, v.Kind)
	}
	return out
}

func has(r *Report, kind string) bool {
	for _, v := range r.Violations {
		if v.Kind == kind {
			return true
		}
	}
	return false
}

func testConfig() Config { return TestConfig() }

func TestViolationsAreReported(t *testing.T) {
	cases := []struct {
		name  string
		build func(h *hist)
		want  string
	}{
		{"stale read", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.put(1, "x", "b", 20, 30)
			h.get(2, "x", "a", 40, 50) // b was acknowledged before this read began
		}, KindNotLinearizable},
		{"lost write", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.get(1, "x", "", 20, 30) // the acknowledged put vanished
		}, KindNotLinearizable},
		{"duplicated retry: a swap applied twice", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.cas(1, "x", "a", "b", true, "", 20, 30)
			h.put(2, "x", "c", 40, 50)
			h.get(3, "x", "b", 60, 70) // the swap's retry re-applied it after c
		}, KindNotLinearizable},
		{"swap that succeeded against the wrong value", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.cas(1, "x", "z", "b", true, "", 20, 30)
		}, KindNotLinearizable},
		{"failed swap that saw a stale value", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.put(0, "x", "b", 20, 30)
			h.cas(1, "x", "z", "c", false, "a", 40, 50)
		}, KindNotLinearizable},
		{"read of an unknown write before it was sent", func(h *hist) {
			h.get(0, "x", "a", 0, 10)
			h.put(1, "x", "a", 20, -1)
		}, KindNotLinearizable},
		{"phantom eventual read", func(h *hist) {
			h.put(0, "x", "a", 0, 10)
			h.eget(1, "x", "ghost", 20, 30)
		}, KindPhantomRead},
		{"eventual read of a failed write", func(h *hist) {
			h.failedPut(0, "x", "a", 0, 10)
			h.eget(1, "x", "a", 20, 30)
		}, KindFailedWriteSeen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &hist{}
			tc.build(h)
			rep := Check(Input{Ops: h.ops}, testConfig())
			if !has(rep, tc.want) {
				t.Fatalf("violations %v; want %s", kinds(rep), tc.want)
			}
			t.Log(rep.Violations)
			if rep.Valid() {
				t.Fatal("Valid() = true with violations")
			}
		})
	}
}

func TestValidHistoryPasses(t *testing.T) {
	h := &hist{}
	h.get(0, "x", "", 0, 5)
	h.cas(0, "x", "", "a", true, "", 6, 10) // create
	h.ops[len(h.ops)-1].ExpectAbsent = true
	h.put(1, "x", "b", 8, 40)  // concurrent with the read below
	h.get(2, "x", "a", 12, 20) // b not yet applied
	h.get(2, "x", "b", 41, 45)
	h.cas(0, "x", "a", "c", false, "b", 46, 50) // saw b
	h.cas(1, "x", "b", "d", true, "", 51, 55)
	h.put(3, "x", "e", 56, -1)  // unknown, never seen: dropped
	h.put(4, "x", "f", 57, -1)  // unknown, seen below: placed before it
	h.get(2, "x", "f", 90, 100) // f took effect
	h.failedPut(1, "x", "g", 101, 102)
	h.get(0, "x", "f", 103, 104)
	h.eget(1, "x", "d", 60, 61) // stale but real
	h.eget(1, "x", "", 62, 63)
	h.put(5, "y", "1", 0, 10)
	h.get(5, "y", "1", 11, 12)
	rep := Check(Input{Ops: h.ops}, testConfig())
	if !rep.Valid() {
		t.Fatalf("valid history rejected: %v", rep.Violations)
	}
	if rep.Keys != 2 || rep.Linearizable != 2 {
		t.Fatalf("Keys=%d Linearizable=%d, want 2 and 2", rep.Keys, rep.Linearizable)
	}
	if rep.Ops.Unknown != 2 || rep.Ops.Fail != 1 {
		t.Fatalf("counts %+v, want 2 unknown and 1 failed", rep.Ops)
	}
}

func TestUnknownWriteMayHaveHappened(t *testing.T) {
	for _, seen := range []bool{false, true} {
		h := &hist{}
		h.put(0, "x", "a", 0, 10)
		h.put(1, "x", "b", 20, -1)
		if seen {
			h.get(2, "x", "b", 1000, 1010) // long after: still allowed
		} else {
			h.get(2, "x", "a", 1000, 1010)
		}
		if rep := Check(Input{Ops: h.ops}, testConfig()); !rep.Valid() {
			t.Fatalf("seen=%v: an unknown write was treated as failed or applied: %v", seen, rep.Violations)
		}
	}
}

func TestCheckTimeoutIsAFailure(t *testing.T) {
	h := &hist{}
	// Sixteen concurrent writes, then reads that disagree: deciding that
	// takes a search over the writes' orders, far longer than a nanosecond.
	// Were it ever decided that fast, the verdict would be "illegal", so
	// the run must be reported invalid either way.
	for i := range 16 {
		h.put(i, "x", string(rune('a'+i)), 0, 1000)
	}
	h.get(20, "x", "a", 1001, 1002)
	h.get(20, "x", "b", 1003, 1004)
	rep := Check(Input{Ops: h.ops}, Config{Timeout: time.Nanosecond, Workers: 1})
	if !has(rep, KindCheckTimeout) && !has(rep, KindNotLinearizable) {
		t.Fatalf("violations %v; want a check timeout", kinds(rep))
	}
	if rep.Valid() {
		t.Fatal("an undecided check passed")
	}
}

func finalFor(h *hist, client int) *history.Final {
	return &history.Final{FinalClient: client, Partitions: 1, PartitionKeys: map[int]string{0: "w/0"},
		Replicas: map[int][]string{0: {"n1", "n2", "n3"}}, ConvergeLimit: 30}
}

func replicaReads(key string, found bool, v string, ver uint64) []history.ReplicaRead {
	var out []history.ReplicaRead
	for _, n := range []string{"n1", "n2", "n3"} {
		out = append(out, history.ReplicaRead{Key: key, Partition: 0, Node: n, Found: found, Value: v, Version: ver, ServedBy: n})
	}
	return out
}

func TestFinalChecks(t *testing.T) {
	const fc = 9
	base := func() (*hist, *history.Final) {
		h := &hist{}
		h.put(0, "d/1", "v1", 0, 10)
		h.put(fc, "w/0", "w", 100, 110)
		h.get(fc, "d/1", "v1", 120, 130).Version = 7
		h.get(fc, "w/0", "w", 131, 132).Version = 8
		for _, o := range h.ops {
			o.Partition = 0
		}
		f := finalFor(h, fc)
		f.Reads = append(replicaReads("d/1", true, "v1", 7), replicaReads("w/0", true, "w", 8)...)
		return h, f
	}
	t.Run("all good", func(t *testing.T) {
		h, f := base()
		if rep := Check(Input{Ops: h.ops, Final: f}, testConfig()); !rep.Valid() {
			t.Fatalf("violations: %v", rep.Violations)
		}
	})
	t.Run("lost acknowledged write", func(t *testing.T) {
		h, f := base()
		h.ops[2].Found, h.ops[2].Out = false, ""
		f.Reads = append(replicaReads("d/1", false, "", 0), replicaReads("w/0", true, "w", 8)...)
		rep := Check(Input{Ops: h.ops, Final: f}, testConfig())
		if !has(rep, KindLostWrite) || !has(rep, KindNotLinearizable) {
			t.Fatalf("violations %v; want lost-write and not-linearizable", kinds(rep))
		}
	})
	t.Run("replica behind", func(t *testing.T) {
		h, f := base()
		f.Reads[1].Found, f.Reads[1].Value, f.Reads[1].Version = false, "", 0
		rep := Check(Input{Ops: h.ops, Final: f}, testConfig())
		if !has(rep, KindNotConverged) || !has(rep, KindReplicasDiffer) {
			t.Fatalf("violations %v; want not-converged and replicas-differ", kinds(rep))
		}
	})
	t.Run("replica with another version", func(t *testing.T) {
		h, f := base()
		f.Reads[2].Version = 6
		if rep := Check(Input{Ops: h.ops, Final: f}, testConfig()); !has(rep, KindReplicasDiffer) {
			t.Fatalf("violations %v; want replicas-differ", kinds(rep))
		}
	})
	t.Run("write after heal failed", func(t *testing.T) {
		h, f := base()
		h.ops[1].Outcome = history.OutcomeFail
		if rep := Check(Input{Ops: h.ops, Final: f}, testConfig()); !has(rep, KindFinalWriteFailed) {
			t.Fatalf("violations %v; want final-write-failed", kinds(rep))
		}
	})
	t.Run("no final read", func(t *testing.T) {
		h, f := base()
		h.ops[2].Outcome = history.OutcomeFail
		if rep := Check(Input{Ops: h.ops, Final: f}, testConfig()); !has(rep, KindFinalReadFailed) {
			t.Fatalf("violations %v; want final-read-failed", kinds(rep))
		}
	})
}

func TestLogScan(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("n1.log", "time=1 level=INFO msg=\"started\"\ntime=2 level=WARN msg=\"no panic: here\"\n")
	if rep := Check(Input{LogDir: dir}, testConfig()); !rep.Valid() {
		t.Fatalf("clean log flagged: %v", rep.Violations)
	}
	write("n2.log", "ok\npanic: runtime error: index out of range\n")
	write("n3.log", "==================\nWARNING: DATA RACE\nRead at 0x00c\n")
	rep := Check(Input{LogDir: dir}, testConfig())
	if !has(rep, KindLogPanic) || !has(rep, KindLogDataRace) {
		t.Fatalf("violations %v; want log-panic and log-data-race", kinds(rep))
	}
	if !strings.Contains(rep.Violations[0].Detail, "n2.log:2") {
		t.Fatalf("detail %q does not name the file and line", rep.Violations[0].Detail)
	}
}

func TestVisualizeWritesHTML(t *testing.T) {
	h := &hist{}
	h.put(0, "x", "a", 0, 10)
	h.put(1, "x", "b", 20, 30)
	h.get(2, "x", "a", 40, 50)
	path := filepath.Join(t.TempDir(), "history.html")
	ws := []history.Window{{Nemesis: "isolate", Detail: "n1 | n2 n3", Start: 15e6, End: 35e6}}
	if err := Visualize(path, h.ops, ws, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<html", "isolate", `put(\"b\")`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("history.html lacks %q", want)
		}
	}
}

func TestLongestOutage(t *testing.T) {
	h := &hist{}
	h.put(0, "x", "a", 0, 10)
	h.failedPut(1, "x", "b", 20, 1500)
	h.put(0, "x", "c", 30, -1)
	h.failedPut(1, "x", "d", 1500, 2000) // the streak: 20 ms .. 2000 ms
	h.get(2, "x", "c", 2100, 2110)
	h.get(2, "y", "", 0, 100)
	h.failedPut(3, "y", "e", 200, 300) // one short failure
	h.get(2, "y", "", 90000, 90001)    // long idle time is no outage
	for _, o := range h.ops {
		o.Partition = 3
		if o.Key == "y" {
			o.Partition = 4
		}
	}
	got := longestOutage(h.ops)
	if got.Partition != 3 || got.Seconds < 1.97 || got.Seconds > 1.99 || got.Attempts != 3 {
		t.Fatalf("longestOutage = %+v; want partition 3, 1.98 s, 3 attempts", got)
	}
}
