// Package jepsen is RingKV's Jepsen-style fault suite: it runs real kvd
// processes in Docker containers, drives them with clients while a nemesis
// partitions, kills and pauses nodes and changes membership (spares join,
// nodes are drained, isolated nodes removed) on a seeded schedule, and
// checks every
// history for linearizability (porcupine) and the other promises the README
// makes.
//
// The pieces live in sub-packages: cluster (docker daemon, image, containers,
// fault primitives), nemesis (schedules and faults), workload (clients and
// keys), history (records of a run) and checker (verdicts). This package
// runs suites of runs, writes each run's folder and prints the table.
//
// # Guarantees
//
//   - Every run leaves a folder (RunsDir/<timestamp>-<seed>/) with the seed,
//     the plan, every operation per client as JSON lines, the nemesis log,
//     the observations after the final heal, the node logs and data dirs,
//     the report and history.html. CheckDir re-checks such a folder alone.
//   - Containers, the network, and a docker daemon the suite started are
//     removed or stopped before Suite.Run returns, also on cancellation;
//     the host's iptables are restored after a daemon the suite started.
//   - Unknown outcomes are never failures; harness errors fail the run.
//
// # Caller's duties
//
// Run as root on a machine with docker.io installed; one suite at a time
// (Suite.Run takes LockPath). Cancel the context to stop early (Ctrl-C in
// cmd/jepsen).
//
// # Example
//
//	cfg := jepsen.SmokeConfig()
//	cfg.Out = os.Stdout
//	s, err := jepsen.NewSuite(cfg)
//	if err != nil {
//		return err
//	}
//	sum, err := s.Run(ctx)
//	if err == nil && !sum.Passed {
//		os.Exit(1)
//	}
package jepsen
