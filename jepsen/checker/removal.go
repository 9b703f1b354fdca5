package checker

import (
	"fmt"
	"slices"

	"github.com/ringkv/ringkv/jepsen/history"
)

// checkRemovals checks the safety rule for nodes removed while cut off: once
// such a node has learned that it was removed from a partition (it no
// longer hosts a replica of it), it must not answer reads of that partition
// from its old copy, strong or eventual. Every read in the history (the
// workload's and the membership nemesis's probes) that the node served
// itself for such a partition, called after the drop was seen, must return
// a value no older than the latest write acknowledged before the read
// began. The node must also drop its copies in time. The rule covers the
// time the nemesis watched the node after it dropped them, until it hosted
// a replica again (a restarted removed node may; see Removal.Rehosted).
func checkRemovals(byKey map[string][]*history.Op, removals []history.Removal) []Violation {
	var out []Violation
	for _, rm := range removals {
		for _, p := range rm.Partitions {
			if _, ok := rm.Dropped[p]; !ok && rm.Replaced > 0 && rm.Healed > 0 && rm.Err == "" {
				out = append(out, Violation{Kind: KindRemovedKept, Detail: fmt.Sprintf(
					"%s was removed from p%d while cut off (replaced at %.3fs, healed at %.3fs) and still hosted a replica of it when the harness stopped waiting",
					rm.Node, p, secs(rm.Replaced), secs(rm.Healed))})
			}
		}
	}
	for _, key := range sortedKeys(byKey) {
		ops := byKey[key]
		for _, o := range ops {
			if (o.Kind != history.KindGet && o.Kind != history.KindEventualGet) || o.Outcome != history.OutcomeOK {
				continue
			}
			for _, rm := range removals {
				dropped, ok := rm.Dropped[o.Partition]
				if !ok || o.ServedBy != rm.Node || o.Call < dropped || !slices.Contains(rm.Partitions, o.Partition) {
					continue
				}
				if until := watchedUntil(rm); until > 0 && o.Call >= until {
					continue // hosted again: an ordinary replica now
				}
				if latest, stale := staleRead(ops, o); stale {
					out = append(out, Violation{Kind: KindRemovedStaleRead, Key: key, Detail: fmt.Sprintf(
						"%s, removed from p%d while cut off and known to have dropped its replica at %.3fs, answered %s; the latest write acknowledged before that read was %s",
						rm.Node, o.Partition, secs(dropped), o, latest)})
				}
			}
		}
	}
	return out
}

// watchedUntil is when the rule stops applying to rm.Node's reads: when it
// was seen hosting a replica again, else when the nemesis stopped watching
// it (0: no bound).
func watchedUntil(rm history.Removal) int64 {
	if rm.RehostedAt > 0 {
		return rm.RehostedAt
	}
	return rm.End
}

// staleRead reports whether read r of a key returned a state older than
// the latest write acknowledged before r began. Values are unique per key
// and nothing deletes, so the states r may return are: the latest such
// write's value, and the value of any write (acknowledged or unknown) that
// began before r returned and did not end before that latest write began.
func staleRead(ops []*history.Op, r *history.Op) (*history.Op, bool) {
	var latest *history.Op
	for _, w := range ops {
		if w.Writes() && w.Outcome == history.OutcomeOK && succeeded(w) && w.Return < r.Call && (latest == nil || w.Return > latest.Return) {
			latest = w
		}
	}
	if latest == nil {
		return nil, false // nothing was acknowledged yet: any written value will do (checkEventual rules out phantoms)
	}
	if !r.Found {
		return latest, true
	}
	for _, w := range ops {
		if !w.Writes() || w.Value != r.Out || w.Outcome == history.OutcomeFail || !succeeded(w) {
			continue
		}
		if w == latest || (w.Call < r.Return && (w.Outcome == history.OutcomeUnknown || w.Return >= latest.Call)) {
			return latest, false
		}
	}
	return latest, true
}

// succeeded is false for a compare-and-swap that reported it did not swap.
func succeeded(w *history.Op) bool {
	return w.Kind != history.KindCAS || w.Outcome != history.OutcomeOK || w.Succeeded
}

func secs(ns int64) float64 { return float64(ns) / 1e9 }
