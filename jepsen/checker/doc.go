// Package checker decides whether a fault run kept RingKV's promises, from
// the run's records alone (package history), so a saved run can be checked
// again later.
//
// # What it checks
//
//   - Linearizability of strong operations, per key, with porcupine
//     (github.com/anishathalye/porcupine) against a register model of get,
//     put and compare-and-swap. A key whose check does not finish within
//     Config.Timeout is a violation too: an unproven history is not a pass.
//   - Eventual reads: every value read was written by some put or swap that
//     did not fail (no phantoms).
//   - Durability: every acknowledged write of a write-once key is there in
//     the final strong read.
//   - After the final heal: a write to every partition succeeded, every key's
//     final strong read succeeded, and every replica of every key holds the
//     same value and version as that read (convergence and identical
//     replicas).
//   - Node logs: no "panic:", no "fatal error:", no "DATA RACE".
//
// Unknown outcomes are never failures; see prepare for how they are modeled.
//
// # Example
//
//	rep := checker.Check(checker.Input{Ops: ops, Final: &final, LogDir: dir}, checker.DefaultConfig())
//	if !rep.Valid() {
//		for _, v := range rep.Violations {
//			fmt.Println(v)
//		}
//	}
package checker
