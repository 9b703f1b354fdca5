package partition_test

import (
	"fmt"

	"github.com/ringkv/ringkv/partition"
)

// Example routes a key, places its partition on three of four nodes, and
// plans the moves needed when a fifth node joins.
func Example() {
	ring, err := partition.NewRing(8)
	if err != nil {
		fmt.Println(err)
		return
	}
	members := []string{"node-a", "node-b", "node-c", "node-d"}

	id := ring.Of([]byte("user:42"))
	start, end := ring.Range(id)
	fmt.Printf("user:42 -> partition %d [%#016x, %#016x]\n", id, start, end)
	fmt.Println("replicas:", partition.Place(id, members, 3))

	before := partition.PlaceAll(ring, members, 3)
	after := partition.PlaceAll(ring, append(members, "node-e"), 3)
	for _, m := range partition.Diff(before, after) {
		fmt.Printf("partition %d: add %s, then remove %s\n", m.Partition, m.To, m.From)
	}
	fmt.Println("node-e now holds", after.Count()["node-e"], "replicas")

	_, err = partition.NewRing(0)
	fmt.Println(err)
	// Output:
	// user:42 -> partition 6 [0xc000000000000000, 0xdfffffffffffffff]
	// replicas: [node-a node-c node-b]
	// partition 2: add node-e, then remove node-a
	// partition 4: add node-e, then remove node-d
	// partition 6: add node-e, then remove node-b
	// partition 7: add node-e, then remove node-c
	// node-e now holds 4 replicas
	// partition: invalid partition count: got 0, choose 1 to 65536 (a power of two such as 64 keeps later splits even)
}
