package checker

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ringkv/ringkv/jepsen/history"
)

// Violation kinds.
const (
	KindNotLinearizable   = "not-linearizable"
	KindCheckTimeout      = "check-timeout"
	KindPhantomRead       = "phantom-read"
	KindFailedWriteSeen   = "failed-write-visible"
	KindLostWrite         = "lost-write"
	KindFinalWriteFailed  = "final-write-failed"
	KindFinalReadFailed   = "final-read-failed"
	KindNotConverged      = "not-converged"
	KindReplicasDiffer    = "replicas-differ"
	KindLogPanic          = "log-panic"
	KindLogDataRace       = "log-data-race"
	KindHarnessInconsists = "harness"
	// KindRemovedStaleRead: a node removed from a partition while cut off
	// answered a read of it from its own replica, after it had dropped
	// that replica, with a value older than the latest acknowledged write.
	KindRemovedStaleRead = "removed-node-stale-read"
	// KindRemovedKept: a removed node still hosted a replica of a partition
	// it was removed from 60 s after the heal, or hosted one again after a
	// restart.
	KindRemovedKept = "removed-replica-kept"
)

// DurablePrefix starts the keys of the write-once durability workload.
const DurablePrefix = "d/"

// Violation is one broken promise.
type Violation struct {
	Kind   string `json:"kind"`
	Key    string `json:"key,omitempty"`
	Detail string `json:"detail"`
}

func (v Violation) String() string {
	if v.Key == "" {
		return fmt.Sprintf("%s: %s", v.Kind, v.Detail)
	}
	return fmt.Sprintf("%s [%s]: %s", v.Kind, v.Key, v.Detail)
}

// Config tunes the checker.
type Config struct {
	// Timeout bounds the linearizability check of one key; running out is a
	// violation.
	Timeout time.Duration
	// Workers is how many keys are checked at once.
	Workers int
}

// DefaultConfig gives each key a minute.
func DefaultConfig() Config {
	return Config{Timeout: time.Minute, Workers: runtime.NumCPU()}
}

// TestConfig is for hand-made histories: 10 s per key, two workers.
func TestConfig() Config { return Config{Timeout: 10 * time.Second, Workers: 2} }

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Timeout <= 0:
		return fmt.Errorf("checker: Timeout %v must be positive", c.Timeout)
	case c.Workers < 1:
		return fmt.Errorf("checker: Workers %d must be at least 1", c.Workers)
	}
	return nil
}

// Input is a run's records.
type Input struct {
	Ops []*history.Op
	// Final is what the run saw after its final heal; nil skips those checks.
	Final *history.Final
	// LogDir holds the node logs (*.log); "" skips the log scan.
	LogDir string
	// Membership is the membership nemesis's record; nil when it did not
	// run.
	Membership *history.Membership
}

// Report is the checker's verdict on one run.
type Report struct {
	Ops history.Counts `json:"ops"`
	// Keys is how many keys had strong operations; Linearizable how many of
	// them passed.
	Keys         int           `json:"keys"`
	Linearizable int           `json:"linearizable"`
	Violations   []Violation   `json:"violations"`
	Took         time.Duration `json:"took_ns"`
	// Illegal lists the keys found not linearizable (for visualizations).
	Illegal []string `json:"illegal_keys,omitempty"`
	// Outage is the longest time a partition answered nothing (a measure).
	Outage Outage `json:"longest_outage"`
}

// Valid reports whether no promise was broken.
func (r *Report) Valid() bool { return len(r.Violations) == 0 }

// Check runs every check on in.
func Check(in Input, cfg Config) *Report {
	start := time.Now()
	rep := &Report{Ops: history.Count(in.Ops)}
	if err := cfg.Validate(); err != nil {
		rep.Violations = append(rep.Violations, Violation{Kind: KindHarnessInconsists, Detail: err.Error()})
		return rep
	}
	byKey := ByKey(in.Ops)
	lin, illegal := checkLinearizable(byKey, cfg)
	rep.Violations = append(rep.Violations, lin...)
	rep.Illegal = illegal
	for _, ops := range byKey {
		if hasStrong(ops) {
			rep.Keys++
		}
	}
	rep.Linearizable = rep.Keys - len(lin)
	rep.Violations = append(rep.Violations, checkEventual(byKey)...)
	if in.Final != nil {
		rep.Violations = append(rep.Violations, checkDurable(byKey, in.Final)...)
		rep.Violations = append(rep.Violations, checkFinal(byKey, in.Final)...)
	}
	if in.Membership != nil {
		rep.Violations = append(rep.Violations, checkRemovals(byKey, in.Membership.Removals)...)
	}
	if in.LogDir != "" {
		rep.Violations = append(rep.Violations, checkLogs(in.LogDir)...)
	}
	rep.Outage = longestOutage(in.Ops)
	rep.Took = time.Since(start)
	return rep
}

// ByKey groups ops by key, each group in call order.
func ByKey(ops []*history.Op) map[string][]*history.Op {
	out := map[string][]*history.Op{}
	for _, o := range ops {
		out[o.Key] = append(out[o.Key], o)
	}
	for _, list := range out {
		history.Sort(list)
	}
	return out
}

func hasStrong(ops []*history.Op) bool {
	for _, o := range ops {
		if o.Kind != history.KindEventualGet {
			return true
		}
	}
	return false
}

// checkLinearizable checks every key with cfg.Workers workers.
func checkLinearizable(byKey map[string][]*history.Op, cfg Config) ([]Violation, []string) {
	keys := sortedKeys(byKey)
	var (
		mu      sync.Mutex
		out     []Violation
		illegal []string
		wg      sync.WaitGroup
	)
	work := make(chan string)
	for range cfg.Workers {
		wg.Go(func() {
			for k := range work {
				if v, bad := checkKey(k, byKey[k], cfg.Timeout); bad {
					mu.Lock()
					out = append(out, v)
					if v.Kind == KindNotLinearizable {
						illegal = append(illegal, k)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	sort.Strings(illegal)
	return out, illegal
}

func checkKey(key string, ops []*history.Op, timeout time.Duration) (Violation, bool) {
	pops := prepare(ops)
	if len(pops) == 0 {
		return Violation{}, false
	}
	switch porcupine.CheckOperationsTimeout(registerModel, pops, timeout) {
	case porcupine.Ok:
		return Violation{}, false
	case porcupine.Unknown:
		return Violation{Kind: KindCheckTimeout, Key: key, Detail: fmt.Sprintf(
			"porcupine did not decide %d operations within %v; an unproven history counts as a failure", len(pops), timeout)}, true
	}
	// Illegal: check again, keeping the partial linearizations to explain.
	_, info := porcupine.CheckOperationsVerbose(registerModel, pops, timeout)
	return Violation{Kind: KindNotLinearizable, Key: key, Detail: explain(pops, info)}, true
}

// explain names the first operation the longest linearization could not
// take in, and the state just before it.
func explain(pops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := info.PartialLinearizationsOperations()
	var longest []porcupine.Operation
	for _, p := range parts {
		for _, l := range p {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	in := map[*history.Op]bool{}
	st := state{}
	for _, o := range longest {
		in[o.Metadata.(meta).op] = true
		_, st = step(st, o.Input.(input), o.Output.(output))
	}
	var stuck *porcupine.Operation
	for i := range pops {
		o := &pops[i]
		if in[o.Metadata.(meta).op] {
			continue
		}
		if stuck == nil || o.Return < stuck.Return {
			stuck = o
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d strong operations; the longest linearizable prefix has %d", len(pops), len(longest))
	if stuck != nil {
		fmt.Fprintf(&b, "; after it the key holds %s and this operation cannot be placed: %s",
			registerModel.DescribeState(st), stuck.Metadata.(meta).op)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
