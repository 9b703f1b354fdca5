package workload

import (
	"sort"
	"sync"
)

// keyRotation hands each worker group its current key and retires a key
// after opsPerKey operations; fresh keys walk round-robin over the
// partitions.
type keyRotation struct {
	mu        sync.Mutex
	ks        *Keyspace
	opsPerKey int
	next      int // keys minted so far
	cur       []groupKey
	used      map[string]bool
}

type groupKey struct {
	key       string
	partition int
	ops       int
}

func newKeyRotation(groups, opsPerKey int, ks *Keyspace) *keyRotation {
	r := &keyRotation{ks: ks, opsPerKey: opsPerKey, cur: make([]groupKey, groups), used: map[string]bool{}}
	for g := range r.cur {
		r.cur[g] = r.mint()
	}
	return r
}

func (r *keyRotation) mint() groupKey {
	p := r.next % r.ks.Partitions()
	key := r.ks.Key("r/", p, r.next)
	r.next++
	r.used[key] = true
	return groupKey{key: key, partition: p}
}

// take returns group g's key for one more operation.
func (r *keyRotation) take(g int) (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur[g].ops >= r.opsPerKey {
		r.cur[g] = r.mint()
	}
	r.cur[g].ops++
	return r.cur[g].key, r.cur[g].partition
}

// record notes a key used outside the rotation.
func (r *keyRotation) record(key string) {
	r.mu.Lock()
	r.used[key] = true
	r.mu.Unlock()
}

func (r *keyRotation) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.used))
	for k := range r.used {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
