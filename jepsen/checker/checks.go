package checker

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ringkv/ringkv/jepsen/history"
)

// checkEventual reports eventual reads of values no write produced, and of
// values whose write failed (a write that failed "certainly did not happen").
func checkEventual(byKey map[string][]*history.Op) []Violation {
	var out []Violation
	for _, key := range sortedKeys(byKey) {
		ops := byKey[key]
		written := map[string]history.Outcome{}
		for _, o := range ops {
			if !o.Writes() || o.Outcome == "" {
				continue
			}
			// A value may only be written once; an OK or unknown write
			// wins over a failed one if the harness ever reused a value.
			if prev, ok := written[o.Value]; !ok || prev == history.OutcomeFail {
				written[o.Value] = o.Outcome
			}
		}
		for _, o := range ops {
			if o.Kind != history.KindEventualGet || o.Outcome != history.OutcomeOK || !o.Found {
				continue
			}
			switch outcome, ok := written[o.Out]; {
			case !ok:
				out = append(out, Violation{Kind: KindPhantomRead, Key: key, Detail: fmt.Sprintf("eventual read saw a value no client wrote: %s", o)})
			case outcome == history.OutcomeFail:
				out = append(out, Violation{Kind: KindFailedWriteSeen, Key: key, Detail: fmt.Sprintf("eventual read saw the value of a write that failed as unavailable: %s", o)})
			}
		}
	}
	return out
}

// finalRead returns the last strong read of key by the final client.
func finalRead(ops []*history.Op, f *history.Final) *history.Op {
	var last *history.Op
	for _, o := range ops {
		if o.Client == f.FinalClient && o.Kind == history.KindGet {
			last = o
		}
	}
	return last
}

// checkDurable reports acknowledged writes of write-once keys that the final
// strong read does not show, and failed writes that it does.
func checkDurable(byKey map[string][]*history.Op, f *history.Final) []Violation {
	var out []Violation
	for _, key := range sortedKeys(byKey) {
		if !strings.HasPrefix(key, DurablePrefix) {
			continue
		}
		ops := byKey[key]
		fr := finalRead(ops, f)
		if fr == nil || fr.Outcome != history.OutcomeOK {
			continue // reported by checkFinal
		}
		for _, o := range ops {
			if !o.Writes() {
				continue
			}
			switch {
			case o.Outcome == history.OutcomeOK && (!fr.Found || fr.Out != o.Value):
				out = append(out, Violation{Kind: KindLostWrite, Key: key, Detail: fmt.Sprintf("acknowledged %s; final read: %s", o, fr)})
			case o.Outcome == history.OutcomeFail && fr.Found && fr.Out == o.Value:
				out = append(out, Violation{Kind: KindFailedWriteSeen, Key: key, Detail: fmt.Sprintf("failed %s; final read: %s", o, fr)})
			}
		}
	}
	return out
}

// checkFinal reports what went wrong after the final heal: writes to
// partitions that failed, final reads that failed, replicas that did not
// converge to the final read or differ from each other.
func checkFinal(byKey map[string][]*history.Op, f *history.Final) []Violation {
	var out []Violation
	for p := 0; p < f.Partitions; p++ {
		key, ok := f.PartitionKeys[p]
		if !ok {
			out = append(out, Violation{Kind: KindFinalWriteFailed, Detail: fmt.Sprintf("partition %d: no key was written after the heal", p)})
			continue
		}
		okWrite := false
		for _, o := range byKey[key] {
			if o.Client == f.FinalClient && o.Writes() && o.Outcome == history.OutcomeOK {
				okWrite = true
			}
		}
		if !okWrite {
			out = append(out, Violation{Kind: KindFinalWriteFailed, Key: key, Detail: fmt.Sprintf("partition %d: the write after the heal did not succeed: %s", p, lastOp(byKey[key]))})
		}
	}
	reads := map[string][]history.ReplicaRead{}
	for _, r := range f.Reads {
		reads[r.Key] = append(reads[r.Key], r)
	}
	for _, key := range sortedKeys(byKey) {
		ops := byKey[key]
		if !hasStrong(ops) {
			continue
		}
		fr := finalRead(ops, f)
		if fr == nil || fr.Outcome != history.OutcomeOK {
			out = append(out, Violation{Kind: KindFinalReadFailed, Key: key, Detail: fmt.Sprintf("no successful strong read after the heal: %v", fr)})
			continue
		}
		out = append(out, checkReplicas(key, fr, reads[key], f)...)
	}
	return out
}

func lastOp(ops []*history.Op) string {
	if len(ops) == 0 {
		return "none"
	}
	return ops[len(ops)-1].String()
}

// checkReplicas compares every replica's last eventual read of key with the
// final strong read and with each other.
func checkReplicas(key string, fr *history.Op, rs []history.ReplicaRead, f *history.Final) []Violation {
	var out []Violation
	want := f.Replicas[fr.Partition]
	got := map[string]history.ReplicaRead{}
	for _, r := range rs {
		got[r.Node] = r
	}
	if len(want) == 0 {
		return []Violation{{Kind: KindNotConverged, Key: key, Detail: fmt.Sprintf("partition %d: the cluster reported no replicas", fr.Partition)}}
	}
	var diffs []string
	versions := map[string]bool{}
	for _, node := range want {
		r, ok := got[node]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: never read", node))
		case r.Err != "":
			diffs = append(diffs, fmt.Sprintf("%s: %s", node, r.Err))
		case r.ServedBy != "" && r.ServedBy != node:
			diffs = append(diffs, fmt.Sprintf("%s: answered by %s instead", node, r.ServedBy))
		case r.Found != fr.Found || r.Value != fr.Out || (fr.Found && r.Version != fr.Version):
			diffs = append(diffs, fmt.Sprintf("%s: %s, final strong read %s", node, describeRead(r.Found, r.Value, r.Version), describeRead(fr.Found, fr.Out, fr.Version)))
		}
		if ok && r.Err == "" {
			versions[describeRead(r.Found, r.Value, r.Version)] = true
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	detail := fmt.Sprintf("partition %d, %.0fs after the heal: %s", fr.Partition, f.ConvergeLimit, strings.Join(diffs, "; "))
	out = append(out, Violation{Kind: KindNotConverged, Key: key, Detail: detail})
	if len(versions) > 1 {
		states := sortedKeys(versions)
		out = append(out, Violation{Kind: KindReplicasDiffer, Key: key, Detail: fmt.Sprintf("partition %d: replicas hold %s", fr.Partition, strings.Join(states, " / "))})
	}
	return out
}

func describeRead(found bool, value string, version uint64) string {
	if !found {
		return "absent"
	}
	return fmt.Sprintf("%q v%d", value, version)
}

// checkLogs scans every *.log file in dir.
func checkLogs(dir string) []Violation {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(paths)
	var out []Violation
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			out = append(out, Violation{Kind: KindHarnessInconsists, Detail: fmt.Sprintf("log %s: %v", p, err)})
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		line := 0
		for sc.Scan() {
			line++
			t := sc.Text()
			switch {
			case strings.HasPrefix(t, "panic:") || strings.HasPrefix(t, "fatal error:"):
				out = append(out, Violation{Kind: KindLogPanic, Detail: fmt.Sprintf("%s:%d: %s", filepath.Base(p), line, t)})
			case strings.Contains(t, "DATA RACE"):
				out = append(out, Violation{Kind: KindLogDataRace, Detail: fmt.Sprintf("%s:%d: %s", filepath.Base(p), line, t)})
			}
		}
		if err := sc.Err(); err != nil {
			out = append(out, Violation{Kind: KindHarnessInconsists, Detail: fmt.Sprintf("log %s: %v", p, err)})
		}
		f.Close()
	}
	return out
}
