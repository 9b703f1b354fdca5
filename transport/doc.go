// Package transport carries the Raft traffic of every partition hosted on a
// node over one peer TCP port.
//
// A Mux owns the node's peer listener. Each partition's Raft group calls
// Mux.Listen to get a Layer: a net.Listener plus Dial, which the replica
// package wraps into a raft.StreamLayer for a hashicorp/raft
// NetworkTransport. Every connection starts with a short header naming the
// cluster and the partition; the acceptor answers one status byte. See
// DESIGN.md for the wire format.
//
// Heartbeats carries what every group sends most often, its small appends
// (heartbeats, the empty appends that tell followers the commit index, and
// the appends of steady-state writes), for all partitions at once: one
// connection per peer, many requests per frame. With hundreds of partitions
// this was most of an idle cluster's CPU as one RPC each.
//
// # Guarantee
//
//   - A connection returned by Layer.Accept was dialed by a peer of the same
//     cluster id for this very partition; a connection returned by
//     Layer.Dial was accepted by the peer's layer for this partition. Both
//     have their deadlines cleared and carry only the caller's bytes.
//   - A refused Dial fails with an error wrapping ErrUnknownPartition,
//     ErrWrongCluster, ErrBadHeader or ErrHandshakeTimeout, plus the peer
//     address and partition.
//   - A slow, silent or malformed peer never delays other handshakes: each
//     runs in its own goroutine, bounded by Config.HandshakeTimeout, and no
//     input makes the package panic.
//   - Layer.Close closes every connection the layer accepted or dialed, and
//     Mux.Close closes every layer, so nothing outlives its owner.
//
// # Caller duties
//
//   - Give the Mux a listener it may own, and run Serve in a goroutine.
//   - Set Config.AdvertiseAddr to an address peers can dial whenever the
//     listener is bound to a wildcard IP; Layer.Addr reports it and raft
//     stores it in its configuration.
//   - Call Mux.SetClusterID before the first Listen once the node knows its
//     cluster id; both sides of a connection must agree exactly.
//   - Keep calling Accept on each open Layer (raft's NetworkTransport does):
//     a dialer is answered OK only when Accept takes its connection, and a
//     layer nobody accepts on makes dialers time out.
//   - Close a Layer when its replica goes away, and the Mux on shutdown.
//
// # Example
//
//	ln, err := net.Listen("tcp", ":7201")
//	if err != nil { ... }
//	cfg := transport.DefaultConfig()
//	cfg.ClusterID = clusterID
//	cfg.AdvertiseAddr = "10.0.0.5:7201"
//	mux, err := transport.NewMux(ln, cfg)
//	if err != nil { ... }
//	go mux.Serve()
//	defer mux.Close()
//
//	layer, err := mux.Listen(17) // partition 17
//	if err != nil { ... }
//	conn, err := layer.Dial("10.0.0.6:7201", 5*time.Second)
//	if errors.Is(err, transport.ErrUnknownPartition) {
//		// that peer hosts no replica of partition 17 (yet)
//	}
package transport
