// Package membership is a kvd node's view of the cluster: who exists, how to reach them, what
// they gossip about themselves (Meta), and whether they are alive. It wraps
// github.com/hashicorp/memberlist (SWIM gossip with probes and suspicion); no memberlist type
// appears in its API and nothing else in RingKV imports memberlist.
//
// # Guarantee
//
// Liveness is a hint, never a Raft decision. Members reports each node as alive, suspect, dead
// or left as seen by this node, at this moment; two nodes may disagree for a while, a dead node
// may come back alive, and a paused process looks exactly like a crashed one. Use statuses to
// route around failures and to time replacements (--dead-timeout), never to change a Raft
// configuration by themselves.
//
// Within that, Gossip promises:
//   - Members lists every node seen since Start, this one included, sorted by name; dead and
//     left nodes stay until Forget.
//   - A node that stops answering is reported suspect by a node whose own probe of it failed,
//     then dead once the cluster declares it failed: about 5 s with DefaultConfig in a 3-5 node
//     cluster, about 1-2 s with TestConfig.
//   - A node that calls Leave is reported left, not dead (unless the announcement is lost).
//   - A node whose cluster id differs from this node's (both non-empty), or whose partition count
//     differs, never becomes a member: Join fails with ErrClusterMismatch or
//     ErrPartitionMismatch on the joining node, the contacted node refuses it too, and every
//     node ignores its gossip. A node with an empty cluster id is accepted, as is any node while
//     this node's cluster id is still empty.
//   - Changes receives a value after every change of the table (coalesced, never blocking gossip).
//
// # Caller's duties
//
//   - Give every node a unique Config.Name and set Meta (ClientAddr, PeerAddr, Partitions,
//     Replicas, BootNonce; ClusterID once known). Keep Meta small: it must encode to at most
//     MetaMaxSize (512) bytes, else ErrMetaTooLarge.
//   - After bootstrap, publish the cluster id with UpdateMeta: from then on foreign clusters are
//     refused. Nodes admitted before that stay members.
//   - Drain Changes promptly enough to stay current; read Members after each receive.
//   - On a graceful stop call Leave, then Shutdown. Forget nodes that will not come back.
//   - Give all nodes of a cluster the same Config.Label (or none); nodes with different labels
//     never talk.
//
// # How statuses are observed
//
// memberlist v0.7.0 keeps each node's state private (Node.State is never set outside merges,
// hashicorp/memberlist#266) and has no suspicion event. So Gossip derives statuses itself:
// alive from join/update events and direct probe acks; dead from leave events; left from leave
// events of a node that announced its leave first (Leave sends every live peer a direct TCP
// message and sets a flag in its gossiped metadata before memberlist's leave); suspect from
// memberlist's log line "Suspect NAME has failed, no acks received", which the log bridge sees
// when this node's own probe fails. A suspicion ends with an ack, a death, or after it outlived
// any memberlist suspicion while the node stayed live.
//
// # Example
//
//	cfg := membership.DefaultConfig()
//	cfg.Name = "n1"
//	cfg.BindAddr, cfg.BindPort = "10.0.0.1", 7301
//	cfg.Meta = membership.Meta{ClientAddr: "10.0.0.1:7101", PeerAddr: "10.0.0.1:7201",
//		Partitions: 64, Replicas: 3, BootNonce: nonce}
//	cfg.Logger = logger
//	g, err := membership.Start(cfg)
//	if err != nil {
//		return err
//	}
//	defer g.Shutdown()
//	if _, err := g.Join([]string{"10.0.0.2:7301", "10.0.0.3:7301"}); err != nil {
//		return err // errors.Is(err, membership.ErrClusterMismatch): wrong --join or --data-dir
//	}
//	for range g.Changes() {
//		for _, m := range g.Members() {
//			route(m.Meta.Name, m.Meta.ClientAddr, m.Status == membership.StatusAlive)
//		}
//	}
package membership
