package jepsen

import (
	"testing"
	"time"

	"github.com/ringkv/ringkv/jepsen/nemesis"
)

func TestChooseMember(t *testing.T) {
	long := time.Minute
	cases := []struct {
		name string
		kind nemesis.Kind
		st   memberState
		want memberPlan
	}{
		{"add a spare", nemesis.MemberAdd, memberState{Eligible: 5, Spares: 2, Replicas: 3, TimeLeft: long}, memberPlan{Action: actAdd}},
		{"add without spares drains", nemesis.MemberAdd, memberState{Eligible: 5, Replicas: 3, TimeLeft: long}, memberPlan{Action: actDrain}},
		{"drain on 5 nodes", nemesis.MemberDrain, memberState{Eligible: 5, Replicas: 3, TimeLeft: long}, memberPlan{Action: actDrain}},
		{"drain on 3 nodes starts a spare", nemesis.MemberDrain, memberState{Eligible: 3, Spares: 1, Replicas: 3, TimeLeft: long}, memberPlan{AddSpare: true, Action: actDrain}},
		{"drain on 3 nodes without spares", nemesis.MemberDrain, memberState{Eligible: 3, Replicas: 3, TimeLeft: long}, memberPlan{Action: actSkip}},
		{"one drain at a time", nemesis.MemberDrain, memberState{Eligible: 4, Replicas: 3, Draining: 1, TimeLeft: long}, memberPlan{Action: actSkip}},
		{"one drain at a time, a spare instead", nemesis.MemberDrain, memberState{Eligible: 4, Spares: 1, Replicas: 3, Draining: 1, TimeLeft: long}, memberPlan{Action: actAdd}},
		{"remove on 5 nodes", nemesis.MemberRemove, memberState{Eligible: 5, Replicas: 3, TimeLeft: long}, memberPlan{Action: actRemove}},
		{"remove on 4 nodes", nemesis.MemberRemove, memberState{Eligible: 4, Replicas: 3, TimeLeft: long}, memberPlan{Action: actRemove}},
		{"remove on 3 nodes starts a spare", nemesis.MemberRemove, memberState{Eligible: 3, Spares: 2, Replicas: 3, TimeLeft: long}, memberPlan{AddSpare: true, Action: actRemove}},
		{"remove on 3 nodes without spares", nemesis.MemberRemove, memberState{Eligible: 3, Replicas: 3, TimeLeft: long}, memberPlan{Action: actSkip}},
		{"remove late in the run adds", nemesis.MemberRemove, memberState{Eligible: 5, Spares: 1, Replicas: 3, TimeLeft: 5 * time.Second}, memberPlan{Action: actAdd}},
		{"remove late without spares drains", nemesis.MemberRemove, memberState{Eligible: 5, Replicas: 3, TimeLeft: 5 * time.Second}, memberPlan{Action: actDrain}},
		{"not a membership fault", nemesis.KillOne, memberState{Eligible: 5, Spares: 2, Replicas: 3, TimeLeft: long}, memberPlan{Action: actSkip}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseMember(tc.kind, tc.st)
			if got.Action != tc.want.Action || got.AddSpare != tc.want.AddSpare {
				t.Fatalf("chooseMember = %+v, want %+v", got, tc.want)
			}
			if (got.Action == actSkip || got.Action != actionOf(tc.kind)) && got.Why == "" && tc.kind != nemesis.MemberAdd {
				t.Errorf("a fallback without a reason: %+v", got)
			}
		})
	}
}

func actionOf(k nemesis.Kind) string {
	switch k {
	case nemesis.MemberAdd:
		return actAdd
	case nemesis.MemberDrain:
		return actDrain
	case nemesis.MemberRemove:
		return actRemove
	}
	return actSkip
}

// Every membership plan keeps R nodes eligible for replicas, whatever the
// state, and never uses a spare that is not there.
func TestChooseMemberKeepsR(t *testing.T) {
	for _, k := range nemesis.MembershipKinds {
		for eligible := 3; eligible <= 7; eligible++ {
			for spares := range 3 {
				for draining := range 2 {
					st := memberState{Eligible: eligible, Spares: spares, Replicas: 3, Draining: draining, TimeLeft: time.Minute}
					p := chooseMember(k, st)
					after := eligible
					if p.AddSpare || p.Action == actAdd {
						if spares == 0 {
							t.Fatalf("%s %+v: plan %+v uses a spare that is not there", k, st, p)
						}
						after++
					}
					if p.Action == actDrain || p.Action == actRemove {
						after--
					}
					if after < 3 {
						t.Fatalf("%s %+v: plan %+v leaves %d eligible nodes", k, st, p, after)
					}
					if p.Action == actDrain && draining > 0 {
						t.Fatalf("%s %+v: a second drain while one is pending", k, st)
					}
				}
			}
		}
	}
}
