// Package wire is RingKV's native client protocol: the KV calls (get, put,
// delete, compare-and-swap) as length-prefixed binary frames on a plain TCP
// connection, pipelined, with many frames per write. It exists because
// net/http's HTTP/2 server was most of the cost of a read: about 78% of the
// server CPU of an eventual get went to HTTP/2 and Connect, 8% to the read
// itself (docs/PERFORMANCE.md).
//
// The messages are the same protobuf messages as the Connect, gRPC and JSON
// API (api/ringkv/v1), and errors carry the same Connect codes, messages and
// metadata, so a client sees identical answers whichever way it talks. Only
// the KV service is native; the cluster service stays on Connect.
//
// # One port
//
// The node's client port serves both: Server.Split looks at the first bytes
// of each connection and serves those that open with Preface itself, handing
// every other one to net/http. A client that meets a node without the
// protocol gets an HTTP 400 back for its preface, Dial returns ErrNotNative,
// and the client uses Connect for that node.
//
// # Guarantees and duties
//
//   - The server answers every request it read, even while closing (Close
//     stops reading, waits for the answers, then hangs up), unless Close's
//     context ends first.
//   - A request larger than ServerConfig.MaxRequestBytes is answered with
//     ResourceExhausted naming the limit; a panicking handler with Internal.
//     Neither affects other requests.
//   - The caller's deadline travels in each request (milliseconds); the
//     server runs the handler under it, or under what
//     ServerConfig.Budget makes of it.
//   - A broken connection fails every call in flight with a connection
//     error: for a write that means the outcome is unknown. Callers must
//     dial again (Conn stays broken) and must treat a call whose context
//     ended as possibly executed.
//
// Example (client side):
//
//	c, err := wire.Dial(ctx, &net.Dialer{}, "127.0.0.1:7101")
//	if errors.Is(err, wire.ErrNotNative) { /* use Connect */ }
//	var resp ringkvv1.GetResponse
//	err = c.Call(ctx, wire.MethodGet, &ringkvv1.GetRequest{Key: k}, &resp)
//
// The frame layout is in frame.go and in DESIGN.md beside this file.
package wire
