// Package nemesis injects faults into a cluster on a seeded schedule: network
// partitions of several shapes, one-way and lossy links, kill -9 with
// restart, and pauses. Every fault is one window, from the moment it is
// applied to the moment it is healed, and windows never overlap.
//
// # Guarantee
//
// Plan is pure: the same seed, kinds and timing give the same schedule on
// every machine. Which nodes a fault hits is drawn from the fault's own
// seed, so it is reproducible too, except for faults aimed at a partition's
// current leader, which depend on who leads when the fault starts (the
// window's detail records who it was).
//
// # Caller's duties
//
// Run one Runner per cluster, and heal everything (cluster.HealAll) after
// Run returns: an interrupted run may stop inside a window.
//
// # Example
//
//	plan := nemesis.Plan(seed, nemesis.AllKinds, 120*time.Second, nemesis.DefaultTiming(), 16)
//	r := nemesis.NewRunner(c, leaderOf, rec.Now, log)
//	windows := r.Run(ctx, plan)
package nemesis
