// Package node is the kvd process: configuration and flags, lifecycle, the
// client API (Connect, gRPC, JSON and the native protocol of package wire on
// one listener, plus /metrics, /healthz, /readyz), routing and forwarding,
// and the controllers that keep the cluster in shape (bootstrap, leadership
// publication, leader balance).
//
// Guarantees: any node accepts any request. A node that hosts the key's
// partition and leads it serves it; otherwise it forwards it once to the
// leader it knows (from its replica's Raft state, or the leadership bitmaps in
// gossip), retrying while an election runs, for at most --request-timeout. A
// forwarded request is never forwarded again: a node that cannot serve one
// answers Unavailable with the Ringkv-Leader header.
//
// A data directory remembers its node name, cluster id and partition count;
// a node started with a contradicting flag is refused with an error that says
// which flag to use. Gossip refuses nodes of another cluster or partition
// count.
//
// Example (what cmd/kvd does):
//
//	cfg, err := node.ParseFlags(os.Args[1:], os.Stderr, os.Stderr)
//	n, err := node.New(cfg)
//	err = n.Run(ctx) // until ctx ends, then a clean stop
package node
