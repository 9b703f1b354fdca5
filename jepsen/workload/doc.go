// Package workload drives a RingKV cluster during a fault run and records
// every operation in a history.Recorder.
//
// # Workloads
//
//   - Register: groups of workers share one key at a time (at most
//     Config.GroupSize concurrent clients per key) and issue strong gets,
//     puts of unique values and compare-and-swaps; after OpsPerKey
//     operations the key is retired and the group moves to a fresh key in
//     the next partition, so keys cover every partition. A share of the
//     reads are eventual reads from a random node.
//   - Durability: one worker writes write-once keys ("d/...") round-robin
//     over the partitions; the checker later demands every acknowledged one.
//
// Every loop is bounded by Config.Duration and by a maximum operation count.
//
// # Example
//
//	w, err := workload.New(cfg, keyspace, rec)
//	if err != nil {
//		return err
//	}
//	defer w.Close()
//	w.Run(ctx) // returns after cfg.Duration
package workload
