// Package partition is the pure math of RingKV's data layout: which partition a
// key belongs to, which nodes should hold each partition, and what must move
// when the membership changes. It has no I/O, no clock and no randomness.
//
// # Layout
//
// A [Ring] of P partitions cuts the 64-bit xxhash64 space into P contiguous
// ranges of equal size (sizes differ by at most one hash value when P is not a
// power of two). A key belongs to the partition whose range holds
// xxhash64(key). Ranges rather than hash mod P keep a later split possible: the
// ranges of a ring of k*P partitions nest exactly inside those of P, so
// partition i splits into partitions k*i .. k*i+k-1 without moving a key to an
// unrelated partition.
//
// [Place] picks the replicas of one partition by rendezvous (highest random
// weight) hashing: every member gets a score for the partition and the r
// highest scores win. Adding a node therefore only moves replicas onto the new
// node, removing one only moves the replicas it held, and each node holds about
// r*P/n replicas. [PlaceAll] does this for every partition and [Diff] turns two
// placements into the [Move] list a controller executes.
//
// # Guarantee
//
// Every function is deterministic: every node that computes with the same
// partition count, the same member set and the same replica count gets the
// same answer, in every process, on every platform and in every release. The
// order in which members are listed and duplicated names do not matter. The
// score formula (see [Place]) is pinned by a test because changing it would
// reshuffle the replicas of every existing cluster.
//
// # Caller duties
//
//   - Agree on P: it is fixed when the cluster is created, and a node with a
//     different P must be refused before it computes anything with this package.
//   - Feed the same member set on every node. The answer is only as consistent
//     as its input; nodes that disagree about membership disagree about
//     placement until gossip converges.
//   - Name each node with a stable, unique, non-empty string. The empty name
//     means "no node" in a [Move] and is ignored everywhere as a member.
//   - Treat a [Placement] as the desired state only. The actual replica set of a
//     partition is its Raft configuration; reconcile towards the placement one
//     configuration change at a time (add To as a non-voter, let it catch up,
//     promote it, then remove From).
//
// # Example
//
//	ring, err := partition.NewRing(64)
//	if err != nil {
//		return err
//	}
//	id := ring.Of([]byte("user:42"))
//	replicas := partition.Place(id, []string{"n1", "n2", "n3", "n4"}, 3)
//	// replicas[0] has the highest score: a natural preferred leader.
package partition
