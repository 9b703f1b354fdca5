package partition

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// sim is a whole cluster as the planner sees it: node states and every
// partition's Raft configuration. Steps apply every action the planner
// proposes, the way the partitions' leaders would.
type sim struct {
	ring   Ring
	r      int
	limit  int
	nodes  []NodeState
	actual map[ID]Replicas
	dead   time.Duration
}

func (s *sim) input() PlanInput {
	return PlanInput{Ring: s.ring, Replicas: s.r, Nodes: s.nodes, DeadTimeout: s.dead, Actual: s.actual, MaxMovesPerNode: s.limit}
}

func (s *sim) node(name string) *NodeState {
	for i := range s.nodes {
		if s.nodes[i].Name == name {
			return &s.nodes[i]
		}
	}
	s.nodes = append(s.nodes, NodeState{Name: name, Alive: true})
	sort.Slice(s.nodes, func(i, j int) bool { return s.nodes[i].Name < s.nodes[j].Name })
	return s.node(name)
}

func (s *sim) alive(name string) bool { return s.node(name).Alive }

// elect gives every partition whose leader is dead a new leader among its
// alive voters, if a majority of them is alive (what Raft would do).
func (s *sim) elect() {
	for id, a := range s.actual {
		if a.Leader != "" && s.alive(a.Leader) && slices.Contains(a.Voters, a.Leader) {
			continue
		}
		a.Leader = ""
		alive := 0
		for _, v := range a.Voters {
			if s.alive(v) {
				alive++
			}
		}
		if alive >= len(a.Voters)/2+1 {
			for _, v := range sorted(a.Voters) {
				if s.alive(v) {
					a.Leader = v
					break
				}
			}
		}
		s.actual[id] = a
	}
}

// step applies every action of one plan and returns them in order. Nonvoters
// that were already there at the start of the step count as caught up.
func (s *sim) step() []Action {
	s.elect()
	for id, a := range s.actual {
		a.CaughtUp = nil
		for _, nv := range a.Nonvoters {
			if s.alive(nv) {
				a.CaughtUp = append(a.CaughtUp, nv)
			}
		}
		s.actual[id] = a
	}
	var done []Action
	for _, p := range Plan(s.input()) {
		if p.Next == nil {
			continue
		}
		a := s.actual[p.Partition]
		switch n := p.Next.Node; p.Next.Kind {
		case ActAddNonvoter:
			a.Nonvoters = append(a.Nonvoters, n)
		case ActPromote:
			a.Nonvoters = without(a.Nonvoters, n)
			a.Voters = append(a.Voters, n)
		case ActRemove:
			a.Nonvoters = without(a.Nonvoters, n)
			a.Voters = without(a.Voters, n)
		case ActTransferLeader:
			a.Leader = n
		}
		s.actual[p.Partition] = a
		done = append(done, *p.Next)
	}
	return done
}

func (s *sim) counts() string {
	c := map[string]int{}
	leads := map[string]int{}
	for _, a := range s.actual {
		for _, v := range a.Voters {
			c[v]++
		}
		leads[a.Leader]++
	}
	var b strings.Builder
	for _, n := range s.nodes {
		state := "alive"
		switch {
		case n.Removed:
			state = "removed"
		case !n.Alive:
			state = fmt.Sprintf("dead %s", n.DeadFor)
		case n.Draining:
			state = "draining"
		}
		fmt.Fprintf(&b, "%s (%s): %d voters\n", n.Name, state, c[n.Name])
	}
	return b.String()
}

func (s *sim) placement() string {
	var b strings.Builder
	for _, p := range Plan(s.input()) {
		a := p.Actual
		fmt.Fprintf(&b, "p%d desired=%s voters=%s", p.Partition, strings.Join(p.Desired, ","), strings.Join(sorted(a.Voters), ","))
		if len(a.Nonvoters) > 0 {
			fmt.Fprintf(&b, " nonvoters=%s", strings.Join(sorted(a.Nonvoters), ","))
		}
		if p.UnderReplicated {
			b.WriteString(" under-replicated")
		}
		switch {
		case p.Next != nil:
			fmt.Fprintf(&b, " next=%s %s", p.Next.Kind, p.Next.Node)
		case p.Blocked != "":
			fmt.Fprintf(&b, " blocked=%q", p.Blocked)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestPlanScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/plan", func(t *testing.T, path string) {
		var s *sim
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			switch td.Cmd {
			case "init":
				var p, r int
				var names string
				td.ScanArgs(t, "partitions", &p)
				td.ScanArgs(t, "replicas", &r)
				td.ScanArgs(t, "nodes", &names)
				ring, err := NewRing(p)
				if err != nil {
					t.Fatal(err)
				}
				s = &sim{ring: ring, r: r, limit: 1, actual: map[ID]Replicas{}, dead: time.Minute}
				td.MaybeScanArgs(t, "limit", &s.limit)
				members := strings.Split(names, ",")
				for _, n := range members {
					s.node(n)
				}
				for id, reps := range PlaceAll(ring, members, r) {
					s.actual[id] = Replicas{Voters: reps, Leader: reps[0]}
				}
				return s.counts()
			case "add":
				for _, n := range td.CmdArgs {
					s.node(n.Key)
				}
				return s.counts()
			case "kill":
				for _, n := range td.CmdArgs {
					st := s.node(n.Key)
					st.Alive, st.DeadFor = false, 0
					if len(n.Vals) > 0 {
						d, err := time.ParseDuration(n.Vals[0])
						if err != nil {
							t.Fatal(err)
						}
						st.DeadFor = d
					}
				}
				return s.counts()
			case "revive":
				for _, n := range td.CmdArgs {
					st := s.node(n.Key)
					st.Alive, st.DeadFor = true, 0
				}
				return s.counts()
			case "drain", "undrain":
				for _, n := range td.CmdArgs {
					s.node(n.Key).Draining = td.Cmd == "drain"
				}
				return s.counts()
			case "remove":
				for _, n := range td.CmdArgs {
					s.node(n.Key).Removed = true
				}
				return s.counts()
			case "plan":
				return s.placement()
			case "run":
				var b strings.Builder
				for i := 1; i <= 200; i++ {
					acts := s.step()
					if len(acts) == 0 {
						fmt.Fprintf(&b, "stable after %d steps\n", i-1)
						b.WriteString(s.counts())
						return b.String()
					}
					parts := make([]string, len(acts))
					for j, a := range acts {
						parts[j] = a.String()
					}
					fmt.Fprintf(&b, "step %d: %s\n", i, strings.Join(parts, "; "))
				}
				t.Fatal("did not converge in 200 steps")
			case "check":
				// Every partition has exactly its desired voters, no nonvoter, a leader.
				for _, p := range Plan(s.input()) {
					if p.Moving || p.Actual.Leader == "" {
						return fmt.Sprintf("p%d not settled: %+v", p.Partition, p)
					}
				}
				return "ok"
			}
			t.Fatalf("unknown command %q", td.Cmd)
			return ""
		})
	})
}

// TestPlanNeverRemovesBelowMajority checks the safety rule on every step of
// random scenarios: no step removes a voter when less than a majority of the
// remaining voters would be alive.
func TestPlanNeverRemovesBelowMajority(t *testing.T) {
	ring, _ := NewRing(32)
	names := []string{"a", "b", "c", "d", "e"}
	for seed := range 50 {
		s := &sim{ring: ring, r: 3, limit: 2, actual: map[ID]Replicas{}, dead: time.Minute}
		for _, n := range names {
			s.node(n)
		}
		for id, reps := range PlaceAll(ring, names[:3], 3) {
			s.actual[id] = Replicas{Voters: reps, Leader: reps[0]}
		}
		// Kill one node for good and one briefly, depending on the seed.
		s.node(names[seed%5]).Alive = false
		s.node(names[seed%5]).DeadFor = 2 * time.Minute
		s.node(names[(seed+2)%5]).Alive = seed%3 != 0
		for range 50 {
			s.elect()
			for _, p := range Plan(s.input()) {
				if p.Next == nil || p.Next.Kind != ActRemove {
					continue
				}
				rest := without(p.Actual.Voters, p.Next.Node)
				alive := 0
				for _, v := range rest {
					if s.alive(v) {
						alive++
					}
				}
				if slices.Contains(p.Actual.Voters, p.Next.Node) && alive < len(rest)/2+1 {
					t.Fatalf("seed %d: %s removes a voter leaving %d/%d alive", seed, p.Next, alive, len(rest))
				}
			}
			if len(s.step()) == 0 {
				break
			}
		}
	}
}
