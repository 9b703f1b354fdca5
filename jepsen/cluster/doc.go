// Package cluster runs RingKV nodes in Docker for the fault suite: it starts
// a docker daemon when none runs (and undoes what the daemon does to the
// host), builds a FROM-scratch image around a static kvd, and runs one
// container per node with a fixed address on a private network. It also
// offers the fault primitives the nemeses use: iptables rules inside a
// node's network namespace, kill -9 and restart, pause and unpause.
//
// # Guarantees
//
//   - Traffic only goes to the containers on the run's network (and
//     loopback); the host's iptables are never changed by this package, and
//     a daemon it started runs with --iptables=false --ip-forward=false and
//     has the host's rules restored after it stops.
//   - Everything it creates carries the label ringkv.jepsen=1 and the
//     configured name prefix; Destroy and Cleanup remove exactly those.
//
// # Caller's duties
//
// Run as root. Call Cluster.Destroy (also on failure and on interrupt) and
// Daemon.Stop, with a fresh context: the run's context may already be done.
//
// # Example
//
//	d := cluster.NewDocker(log)
//	daemon, err := cluster.EnsureDaemon(ctx, d, stateDir, log)
//	if err != nil {
//		return err
//	}
//	defer daemon.Stop()
//	c, err := cluster.Start(ctx, d, cfg)
//	if err != nil {
//		return err
//	}
//	defer c.Destroy(context.Background())
//	err = c.Partition(ctx, [][]int{{0}, {1, 2}})
package cluster
