package nemesis

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func TestPlanIsDeterministicAndFits(t *testing.T) {
	tm := DefaultTiming()
	total := 120 * time.Second
	a := Plan(42, AllKinds, total, tm, 16)
	b := Plan(42, AllKinds, total, tm, 16)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different plans")
	}
	if reflect.DeepEqual(a, Plan(43, AllKinds, total, tm, 16)) {
		t.Fatal("different seeds gave the same plan")
	}
	if len(a) < 5 {
		t.Fatalf("only %d faults in %v", len(a), total)
	}
	end := time.Duration(0)
	for i, f := range a {
		switch {
		case f.At < tm.Warmup:
			t.Errorf("fault %d (%v) starts in the warm-up", i, f)
		case f.At < end+tm.MinGap && i > 0:
			t.Errorf("fault %d (%v) starts %v after the previous one ended; gap must be >= %v", i, f, f.At-end, tm.MinGap)
		case f.For < tm.MinFault || f.For > tm.MaxFault:
			t.Errorf("fault %d (%v) lasts outside [%v, %v]", i, f, tm.MinFault, tm.MaxFault)
		case f.At+f.For > total-tm.Cooldown:
			t.Errorf("fault %d (%v) runs into the cool-down", i, f)
		case f.Partition < 0 || f.Partition >= 16:
			t.Errorf("fault %d targets partition %d", i, f.Partition)
		}
		end = f.At + f.For
	}
}

func TestPlanCyclesThroughEveryKind(t *testing.T) {
	tm := DefaultTiming()
	tm.MinFault, tm.MaxFault, tm.MinGap, tm.MaxGap = 5*time.Second, 5*time.Second, time.Second, time.Second
	plan := Plan(7, AllKinds, time.Duration(len(AllKinds))*6*time.Second+tm.Warmup+tm.Cooldown, tm, 16)
	seen := map[Kind]int{}
	for _, f := range plan[:len(AllKinds)] {
		seen[f.Kind]++
	}
	for _, k := range AllKinds {
		if seen[k] != 1 {
			t.Errorf("kind %s appears %d times in the first cycle; want once", k, seen[k])
		}
	}
}

func TestPlanWithoutKinds(t *testing.T) {
	if p := Plan(1, nil, time.Minute, DefaultTiming(), 16); len(p) != 0 {
		t.Fatalf("plan without kinds has %d faults", len(p))
	}
}

func TestParseKinds(t *testing.T) {
	cases := []struct {
		in      string
		want    []Kind
		wantErr bool
	}{
		{"kill", []Kind{KillOne, KillMinority, KillAll}, false},
		{"pause-leader, lossy,pause-leader", []Kind{PauseLeader, Lossy}, false},
		{"none", nil, false},
		{"all", AllKinds, false},
		{"bogus", nil, true},
		{"membership", MembershipKinds, false},
		{"member-remove,kill-one", []Kind{MemberRemove, KillOne}, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseKinds(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// connected returns, per node, the set of nodes it hears (itself included).
func connected(n int, links []Link) []map[int]bool {
	cut := map[Link]bool{}
	for _, l := range links {
		cut[l] = true
	}
	out := make([]map[int]bool, n)
	for i := range n {
		out[i] = map[int]bool{i: true}
		for j := range n {
			if i != j && !cut[Link{To: i, From: j}] && !cut[Link{To: j, From: i}] {
				out[i][j] = true
			}
		}
	}
	return out
}

func TestShapes(t *testing.T) {
	for _, n := range []int{3, 5, 7} {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, 1))
			maj := n/2 + 1

			links, groups := halves(rng, n)
			if len(groups[0])+len(groups[1]) != n || len(groups[0]) >= maj {
				t.Fatalf("n=%d halves %v", n, groups)
			}
			for _, g := range connected(n, links) {
				if len(g) != len(groups[0]) && len(g) != len(groups[1]) {
					t.Fatalf("n=%d halves: a node hears %d nodes", n, len(g))
				}
			}

			for x := range n {
				c := connected(n, isolate(x, n))
				if len(c[x]) != 1 {
					t.Fatalf("n=%d isolate %d: it still hears %v", n, x, c[x])
				}
			}

			views := connected(n, ring(rng, n))
			distinct := map[string]bool{}
			for i, v := range views {
				if len(v) < maj {
					t.Fatalf("n=%d ring: node %d hears only %d nodes, not a majority", n, i, len(v))
				}
				distinct[keyOf(v, n)] = true
			}
			if n >= 5 && len(distinct) != n {
				t.Fatalf("n=%d ring: %d distinct majorities, want %d", n, len(distinct), n)
			}
			if n == 3 && len(ring(rng, n)) != 2 {
				t.Fatalf("n=3 ring should cut exactly one link both ways")
			}

			blinks, b := bridge(rng, n)
			bv := connected(n, blinks)
			if len(bv[b]) != n {
				t.Fatalf("n=%d bridge %d does not hear everyone", n, b)
			}
			for i, v := range bv {
				if i != b && len(v) == n {
					t.Fatalf("n=%d bridge: node %d besides the bridge hears everyone", n, i)
				}
			}

			if m := minority(rng, n); len(m) >= maj || len(m) < 1 {
				t.Fatalf("n=%d minority of %d nodes", n, len(m))
			}
		}
	}
}

func TestOneWayAndEveryLink(t *testing.T) {
	deaf := oneWay(1, 3, true)
	for _, l := range deaf {
		if l.To != 1 {
			t.Fatalf("deaf node 1: link %v drops at another node", l)
		}
	}
	mute := oneWay(1, 3, false)
	for _, l := range mute {
		if l.From != 1 || l.To == 1 {
			t.Fatalf("mute node 1: link %v", l)
		}
	}
	if got := len(everyLink(5)); got != 20 {
		t.Fatalf("everyLink(5) has %d links, want 20", got)
	}
}

func keyOf(v map[int]bool, n int) string {
	b := make([]byte, n)
	for i := range n {
		b[i] = '0'
		if v[i] {
			b[i] = '1'
		}
	}
	return string(b)
}
