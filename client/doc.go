// Package client is the embedded Go client of RingKV.
//
// A Client sends each key-value request to a node of the cluster over
// RingKV's native protocol (package wire: binary frames on one pipelined TCP
// connection per node, on the node's client port), and the cluster calls
// (members, partitions, status, drain...) over Connect (HTTP/2 cleartext, one
// shared connection per node). Config.Protocol = ProtocolConnect sends
// everything over Connect; https:// endpoints and nodes too old for the
// native protocol get Connect without asking. The answers, errors and
// guarantees below are the same either way. Any node serves any request,
// forwarding what it cannot serve to the partition's leader; the Client
// saves that hop by keeping a routing table (partition -> leader), fetched
// in the background with the Cluster.Partitions call on first use and
// refreshed the same way, at most once per 100 ms, when a node answers "not
// leader" (its Ringkv-Leader hint is used at once) or a request fails. No
// request waits for the table: until it is there, requests go to the
// configured endpoints in turn.
//
// # Guarantees
//
//   - Strong reads (the default) are linearizable. Eventual reads are answered
//     by any replica at once and may be stale; KV.Receipt says which node
//     answered, how far it had applied the log and whether it led.
//   - Every write (Put, Delete, CompareAndSwap) carries a request id: a random
//     non-zero client id and a sequence number, the same on every attempt.
//     The cluster applies a write once however often it is retried and
//     answers every attempt with the first result. Retrying a write inside
//     one call is therefore safe, and the Client does it.
//   - Failed attempts (node unreachable, no leader, no quorum, an attempt
//     timing out after Config.RequestTimeout) are retried after a backoff
//     with full jitter, up to Config.MaxAttempts attempts, and never past
//     the caller's context. Answers that no retry can change (ErrNotFound,
//     ErrInvalidArgument, ErrFailedPrecondition) are returned at once.
//   - Every error wraps one sentinel (ErrNotFound, ErrUnavailable,
//     ErrInvalidArgument, ErrFailedPrecondition, ErrOutcomeUnknown,
//     ErrClosed), and its text carries the server's reason.
//
// # Operating the cluster
//
// Besides keys, a Client asks about and changes the cluster's shape:
// Members, Partitions and Status describe it; Plan shows what the cluster
// would do next and changes nothing; Drain moves every replica and
// leadership off a node before it is stopped (Undrain reverses it); Remove
// declares a stopped node gone for good, so that its replicas are replaced
// at once. Drain, Undrain and Remove are idempotent, so they are retried
// like reads and never return ErrOutcomeUnknown. A refusal (removing a node
// that is still alive, draining one that is not) is ErrFailedPrecondition
// with the server's advice; an unknown node name is ErrNotFound.
//
// # Outcome unknown
//
// A write fails with ErrOutcomeUnknown when some attempt may have reached
// the cluster (it timed out, or its connection broke after it was sent) and
// no later attempt got a definite answer before the attempts or the context
// ran out. The write may have been applied, or may yet be, or not: read the
// key to find out. A write that fails with ErrUnavailable was certainly not
// applied. Reads never return ErrOutcomeUnknown.
//
// # Caller's duties
//
// Bound every call with a context deadline: it is the only bound on a call
// as a whole. Share one Client (it is safe for concurrent use) and Close it.
// A new call with the same arguments is a new write, not a retry: after
// ErrOutcomeUnknown, read before you write again if it matters.
//
// # Example
//
//	cfg := client.DefaultConfig()
//	cfg.Endpoints = []string{"10.0.0.1:7101", "10.0.0.2:7101"}
//	c, err := client.New(cfg)
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
//	defer cancel()
//	version, err := c.Put(ctx, []byte("k"), []byte("v"))
//	if errors.Is(err, client.ErrOutcomeUnknown) {
//		// Maybe written: read "k" to find out.
//	}
//	kv, err := c.Get(ctx, []byte("k"), client.WithConsistency(client.Eventual))
//	if errors.Is(err, client.ErrNotFound) {
//		// No such key (on the replica that answered).
//	}
//
// The fake nodes of package clienttest serve the same API in-process, for
// tests of code that uses this package.
package client
