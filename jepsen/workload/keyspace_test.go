package workload

import (
	"math"
	"testing"

	"github.com/cespare/xxhash/v2"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// table describes p equal ranges, the way the cluster reports them.
func table(p int) *ringkvv1.PartitionsResponse {
	resp := &ringkvv1.PartitionsResponse{PartitionCount: uint32(p)}
	step := math.MaxUint64/uint64(p) + 1
	for i := range p {
		start := uint64(i) * step
		end := start + step - 1
		if i == p-1 {
			end = math.MaxUint64
		}
		resp.Partitions = append(resp.Partitions, &ringkvv1.Partition{Id: uint32(i), HashStart: start, HashEnd: end})
	}
	return resp
}

func TestKeyspaceMintsKeysInEveryPartition(t *testing.T) {
	ks, err := NewKeyspace(table(16))
	if err != nil {
		t.Fatal(err)
	}
	if ks.Partitions() != 16 {
		t.Fatalf("Partitions() = %d", ks.Partitions())
	}
	step := uint64(math.MaxUint64/16 + 1)
	for p := range 16 {
		for n := range 5 {
			k := ks.Key("r/", p, n)
			if got := ks.Of(k); got != p {
				t.Fatalf("Key(r/, %d, %d) = %q lands in %d", p, n, k, got)
			}
			if want := int(xxhash.Sum64String(k) / step); want != p {
				t.Fatalf("%q hashes into range %d, Of says %d", k, want, p)
			}
		}
	}
	if ks.Key("r/", 3, 1) == ks.Key("r/", 3, 2) {
		t.Fatal("different n gave the same key")
	}
}

func TestKeyspaceRejectsBadTables(t *testing.T) {
	gap := table(4)
	gap.Partitions[2].HashStart++
	short := table(4)
	short.Partitions[3].HashEnd--
	cases := map[string]*ringkvv1.PartitionsResponse{
		"empty":        {},
		"gap":          gap,
		"short at top": short,
	}
	for name, resp := range cases {
		if _, err := NewKeyspace(resp); err == nil {
			t.Errorf("%s: NewKeyspace accepted it", name)
		}
	}
}

func TestKeyRotationRetiresKeys(t *testing.T) {
	ks, err := NewKeyspace(table(16))
	if err != nil {
		t.Fatal(err)
	}
	r := newKeyRotation(2, 3, ks)
	var keys []string
	parts := map[int]bool{}
	for range 3 * 20 {
		k, p := r.take(0)
		keys = append(keys, k)
		parts[p] = true
	}
	for i := 0; i < len(keys); i += 3 {
		if keys[i] != keys[i+1] || keys[i] != keys[i+2] {
			t.Fatalf("key changed within its 3 operations: %v", keys[i:i+3])
		}
		if i > 0 && keys[i] == keys[i-1] {
			t.Fatalf("key %q not retired after 3 operations", keys[i])
		}
	}
	if len(parts) != 16 {
		t.Fatalf("20 keys covered %d partitions, want all 16", len(parts))
	}
	if k1, _ := r.take(1); k1 == keys[0] {
		t.Fatal("two groups share a key")
	}
}

func TestConfigValidate(t *testing.T) {
	good := TestConfig(map[string]string{"n1": "10.0.0.1:7101"})
	if err := good.Validate(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
	bad := good
	bad.GroupSize = 11
	if bad.Validate() == nil {
		t.Fatal("11 clients per key accepted")
	}
	bad = good
	bad.Endpoints = nil
	if bad.Validate() == nil {
		t.Fatal("no endpoints accepted")
	}
}
