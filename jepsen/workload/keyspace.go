package workload

import (
	"fmt"
	"sort"

	"github.com/cespare/xxhash/v2"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// Keyspace maps keys to partitions with the hash ranges the cluster reports
// (Cluster.Partitions), and mints keys that land in a chosen partition, so a
// workload can spread its keys over every partition.
type Keyspace struct {
	starts []uint64 // sorted range starts; partition i owns [starts[i], starts[i+1])
	ids    []int
}

// NewKeyspace builds a Keyspace from a partition table. The ranges must tile
// the 64-bit hash space.
func NewKeyspace(resp *ringkvv1.PartitionsResponse) (*Keyspace, error) {
	ps := append([]*ringkvv1.Partition(nil), resp.GetPartitions()...)
	if len(ps) == 0 {
		return nil, fmt.Errorf("workload: the cluster reported no partitions")
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].GetHashStart() < ps[j].GetHashStart() })
	ks := &Keyspace{}
	var next uint64
	for i, p := range ps {
		if p.GetHashStart() != next || (i > 0 && next == 0) {
			return nil, fmt.Errorf("workload: partition %d starts at %#x, want %#x: the ranges do not tile the hash space", p.GetId(), p.GetHashStart(), next)
		}
		ks.starts = append(ks.starts, p.GetHashStart())
		ks.ids = append(ks.ids, int(p.GetId()))
		next = p.GetHashEnd() + 1
	}
	if next != 0 {
		return nil, fmt.Errorf("workload: the last partition ends at %#x, not at the top of the hash space", next-1)
	}
	return ks, nil
}

// Partitions is the partition count.
func (k *Keyspace) Partitions() int { return len(k.ids) }

// Of returns key's partition.
func (k *Keyspace) Of(key string) int {
	h := xxhash.Sum64String(key)
	i := sort.Search(len(k.starts), func(i int) bool { return k.starts[i] > h }) - 1
	return k.ids[i]
}

// Key returns the first key "<prefix><n>.<salt>" (salt = 0, 1, ...) that
// falls into partition p. It panics if p is not a partition.
func (k *Keyspace) Key(prefix string, p, n int) string {
	// Each try lands in p with probability 1/P; a million misses in a row
	// means p does not exist.
	for salt := 0; salt < 1_000_000; salt++ {
		key := fmt.Sprintf("%s%d.%d", prefix, n, salt)
		if k.Of(key) == p {
			return key
		}
	}
	panic(fmt.Sprintf("workload: no key lands in partition %d of %d", p, len(k.ids)))
}
