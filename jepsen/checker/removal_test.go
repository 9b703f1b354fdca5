package checker

import (
	"testing"

	"github.com/ringkv/ringkv/jepsen/history"
)

// removal builds the record of n3 removed from p2 (probe key m/2), dropped
// at 500 ms.
func removal() *history.Membership {
	return &history.Membership{Removals: []history.Removal{{
		Node: "n3", Partitions: []int{2}, Keys: map[int]string{2: "m/2"},
		Isolated: 100e6, Removed: 150e6, Replaced: 300e6, Healed: 350e6, Dropped: map[int]int64{2: 500e6},
	}}}
}

func servedBy(o *history.Op, node string, p int) *history.Op {
	o.ServedBy, o.Partition = node, p
	return o
}

func TestRemovedNodeStaleReads(t *testing.T) {
	cases := []struct {
		name  string
		build func(h *hist)
		want  string // violation kind, "" for none
	}{
		{"fresh eventual read after the drop", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.eget(1, "m/2", "fresh", 600, 610), "n3", 2)
		}, ""},
		{"stale eventual read after the drop", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.eget(1, "m/2", "old", 600, 610), "n3", 2)
		}, KindRemovedStaleRead},
		{"stale strong read after the drop", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.get(1, "m/2", "old", 600, 610), "n3", 2)
		}, KindRemovedStaleRead},
		{"missing key after an acknowledged write", func(h *hist) {
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.eget(1, "m/2", "", 600, 610), "n3", 2)
		}, KindRemovedStaleRead},
		{"stale read before the drop is eventual consistency", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.eget(1, "m/2", "old", 400, 410), "n3", 2)
		}, ""},
		{"stale read served by another node", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			servedBy(h.eget(1, "m/2", "old", 600, 610), "n1", 2)
		}, ""},
		{"a write concurrent with the read may or may not be seen", func(h *hist) {
			h.put(0, "m/2", "old", 0, 10)
			h.put(0, "m/2", "fresh", 200, 210)
			h.put(0, "m/2", "newer", 590, 700)
			servedBy(h.eget(1, "m/2", "fresh", 600, 610), "n3", 2)
			servedBy(h.eget(1, "m/2", "newer", 620, 630), "n3", 2)
		}, ""},
		{"an unknown write may show up", func(h *hist) {
			h.put(0, "m/2", "fresh", 200, 210)
			h.put(0, "m/2", "maybe", 300, -1)
			servedBy(h.eget(1, "m/2", "maybe", 600, 610), "n3", 2)
		}, ""},
		{"a failed swap is no write", func(h *hist) {
			h.put(0, "m/2", "fresh", 200, 210)
			h.cas(0, "m/2", "x", "never", false, "fresh", 300, 310)
			servedBy(h.eget(1, "m/2", "never", 600, 610), "n3", 2)
		}, KindRemovedStaleRead},
		{"another partition is not covered", func(h *hist) {
			h.put(0, "r/9", "old", 0, 10)
			h.put(0, "r/9", "fresh", 200, 210)
			servedBy(h.eget(1, "r/9", "old", 600, 610), "n3", 5)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &hist{}
			tc.build(h)
			for _, o := range h.ops {
				if o.Key == "m/2" {
					o.Partition = 2
				}
			}
			got := checkRemovals(ByKey(h.ops), removal().Removals)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Fatalf("unexpected violations: %v", got)
			case tc.want != "" && (len(got) != 1 || got[0].Kind != tc.want):
				t.Fatalf("violations %v, want one %s", got, tc.want)
			}
		})
	}
}

func TestRemovedNodeMustDropItsCopies(t *testing.T) {
	m := removal()
	m.Removals[0].Dropped = map[int]int64{}
	if got := checkRemovals(nil, m.Removals); len(got) != 1 || got[0].Kind != KindRemovedKept {
		t.Fatalf("a copy never dropped: %v", got)
	}
	// A read after the node hosts the partition again is an ordinary
	// replica's eventual read.
	h0 := &hist{}
	h0.put(0, "m/2", "old", 0, 10)
	h0.put(0, "m/2", "fresh", 200, 210)
	servedBy(h0.eget(1, "m/2", "old", 1000, 1010), "n3", 2)
	for _, o := range h0.ops {
		o.Partition = 2
	}
	m = removal()
	m.Removals[0].Rehosted, m.Removals[0].Restarted, m.Removals[0].RehostedAt = []int{2}, 900e6, 950e6
	if got := checkRemovals(ByKey(h0.ops), m.Removals); len(got) != 0 {
		t.Fatalf("a read after the node hosts the partition again: %v", got)
	}
	m = removal()
	m.Removals[0].End = 2000e6
	if got := checkRemovals(ByKey(h0.ops), m.Removals); len(got) != 1 || got[0].Kind != KindRemovedStaleRead {
		t.Fatalf("a stale read while watched: %v", got)
	}
	// Through Check, with the record attached.
	h := &hist{}
	h.put(0, "m/2", "old", 0, 10)
	h.put(0, "m/2", "fresh", 200, 210)
	servedBy(h.eget(1, "m/2", "old", 600, 610), "n3", 2)
	for _, o := range h.ops {
		o.Partition = 2
	}
	rep := Check(Input{Ops: h.ops, Membership: removal()}, TestConfig())
	if !has(rep, KindRemovedStaleRead) {
		t.Fatalf("Check missed the stale read: %v", kinds(rep))
	}
}
