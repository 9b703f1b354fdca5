package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client/clienttest"
)

func TestBenchJSON(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		preload   int // keys written before measuring
		wantRatio float64
	}{
		{"put", []string{"--op", "put", "-n", "40"}, 0, 0},
		{"get preloads every key", []string{"--op", "get", "-n", "40", "--keys", "25", "--consistency", "eventual"}, 25, 1},
		{"mixed", []string{"--op", "mixed", "--ratio", "0.5", "-n", "60", "--keys", "10"}, 10, 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := clienttest.NewCluster(t, 2, 4)
			r := kvctl(t, at(cl, append([]string{"-o", "json", "bench", "--clients", "4", "--value-size", "32"}, tc.args...)...))
			wantCode(t, r, 0)
			res := oneJSON[map[string]any](t, r)
			for _, f := range []string{"ops_per_sec", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "errors", "ops", "duration_s", "op", "consistency", "clients"} {
				if _, ok := res[f]; !ok {
					t.Fatalf("bench JSON lacks %s: %v", f, res)
				}
			}
			ops := int(res["ops"].(float64))
			if res["errors"] != float64(0) || ops != int(mustFloat(t, tc.args, "-n")) || res["clients"] != float64(4) || res["ratio"] != tc.wantRatio {
				t.Fatalf("bench JSON %v", res)
			}
			if p50, p99 := res["p50_ms"].(float64), res["p99_ms"].(float64); p50 <= 0 || p99 < p50 || res["p999_ms"].(float64) < p99 {
				t.Fatalf("percentiles out of order: %v", res)
			}
			puts, gets := len(cl.Calls(ringkvv1connect.KVPutProcedure)), len(cl.Calls(ringkvv1connect.KVGetProcedure))
			if puts+gets != ops+tc.preload || (tc.wantRatio == 1 && puts != tc.preload) || (tc.wantRatio == 0 && gets != 0) {
				t.Fatalf("server saw %d puts and %d gets for %d ops", puts, gets, ops)
			}
			for _, c := range cl.Calls(ringkvv1connect.KVPutProcedure) {
				m := c.Msg.(*ringkvv1.PutRequest)
				if !strings.HasPrefix(string(m.GetKey()), "bench-") || len(m.GetValue()) != 32 {
					t.Fatalf("bench put %q with %d bytes", m.GetKey(), len(m.GetValue()))
				}
			}
		})
	}
}

// A cas run swaps on versions: with one client nobody else writes, so every
// swap expects exactly the key's current version (the pre-load's, then its
// own last swap's) and succeeds.
func TestBenchCAS(t *testing.T) {
	cl := clienttest.NewCluster(t, 2, 4)
	r := kvctl(t, at(cl, "-o", "json", "bench", "--op", "cas", "--clients", "1", "-n", "30", "--keys", "3", "--value-size", "16"))
	wantCode(t, r, 0)
	res := oneJSON[map[string]any](t, r)
	if res["ops"] != float64(30) || res["errors"] != float64(0) || res["compare_failed"] != nil {
		t.Fatalf("bench JSON %v; want 30 ops, no errors, no failed comparison", res)
	}
	if puts := cl.Calls(ringkvv1connect.KVPutProcedure); len(puts) != 3 {
		t.Fatalf("pre-load made %d puts; want one per key (3)", len(puts))
	}
	swaps := cl.Calls(ringkvv1connect.KVCompareAndSwapProcedure)
	if len(swaps) != 30 {
		t.Fatalf("server saw %d swaps for 30 cas ops", len(swaps))
	}
	seen := map[string]uint64{}
	for _, c := range swaps {
		m := c.Msg.(*ringkvv1.CompareAndSwapRequest)
		e, ok := m.GetExpect().(*ringkvv1.CompareAndSwapRequest_ExpectedVersion)
		if !ok || e.ExpectedVersion == 0 {
			t.Fatalf("bench swap without a version condition: %v", m)
		}
		if prev, ok := seen[string(m.GetKey())]; ok && e.ExpectedVersion <= prev {
			t.Fatalf("swap of %q expects version %d after %d: not the last version seen", m.GetKey(), e.ExpectedVersion, prev)
		}
		seen[string(m.GetKey())] = e.ExpectedVersion
	}
	if v, ok := cl.Value([]byte("bench-00000000")); !ok || len(v) != 16 {
		t.Fatalf("no swapped value stored: %q", v)
	}
}

func mustFloat(t *testing.T, args []string, flag string) float64 {
	t.Helper()
	for i, a := range args {
		if a == flag {
			var f float64
			if _, err := fmt.Sscan(args[i+1], &f); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return 0
}

func TestBenchTableAndProgress(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	inv := at(cl, "bench", "--op", "mixed", "--duration", "1100ms", "--clients", "2", "--keys", "5")
	inv.tty = true
	r := kvctl(t, inv)
	wantCode(t, r, 0)
	for _, want := range []string{"operation", "mixed (50% reads)", "throughput", "ops/s", "latency (ms)", "p99.9"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("bench table lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "ops/s") || !strings.Contains(r.stderr, "errors") {
		t.Fatalf("no live progress on a terminal's stderr: %q", r.stderr)
	}
	// Not a terminal: no progress line.
	r = kvctl(t, at(cl, "bench", "-n", "5", "--clients", "1"))
	wantCode(t, r, 0)
	if r.stderr != "" {
		t.Fatalf("progress written to a non-terminal stderr: %q", r.stderr)
	}
}

func TestBenchFailures(t *testing.T) {
	cl := clienttest.NewCluster(t, 1, 4)
	cl.SetHook(func(_ context.Context, c clienttest.Call) error {
		if c.Procedure == ringkvv1connect.KVPutProcedure {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("value rejected"))
		}
		return nil
	})
	r := kvctl(t, at(cl, "-o", "json", "bench", "-n", "10", "--clients", "2"))
	wantCode(t, r, 1)
	res := oneJSON[map[string]any](t, r)
	if res["errors"] != float64(10) || res["ops"] != float64(0) || !strings.Contains(res["last_error"].(string), "value rejected") {
		t.Fatalf("bench JSON %v", res)
	}
	if !strings.Contains(r.stderr, "all 10 operations failed") {
		t.Fatalf("stderr %q", r.stderr)
	}
	// A get bench whose pre-load fails stops before measuring anything.
	r = kvctl(t, at(cl, "-o", "json", "bench", "--op", "get", "-n", "10"))
	wantCode(t, r, 1)
	if doc := oneJSON[map[string]string](t, r); !strings.Contains(doc["error"], "pre-loading") {
		t.Fatalf("JSON %v", doc)
	}
}
