// Command etcdbench drives an etcd cluster with the same closed-loop
// workloads as `kvctl bench`, so that `make compare` can set the two side by
// side: the same flags (--op put|get|mixed, --ratio, --consistency,
// --clients, --conns, --duration or -n, --value-size, --keys), the same key
// names, the same pre-load before reads, the same histogram and the same
// `-o json` fields (ops_per_sec, p50_ms, p90_ms, p99_ms, p999_ms, errors, ...).
//
// Consistency maps onto etcd's read modes: strong is a linearizable Range
// (etcd's default, a ReadIndex round through the leader), eventual is a
// serializable Range (the member answers from its local store).
//
// It lives in its own Go module so that the etcd client never enters
// RingKV's go.mod. Example:
//
//	etcdbench --endpoints 127.0.0.1:7441,127.0.0.1:7442,127.0.0.1:7443 \
//	    --op get --consistency strong --clients 64 --duration 10s -o json
package main
