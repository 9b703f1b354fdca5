// Package integration is RingKV's integration test tier (DESIGN.md section
// 6, tier 4): real kvd processes on loopback, driven by the kvctl binary,
// the Go client and raw HTTP. It has no code outside its tests.
//
// # What it proves
//
// Each test starts its own 3-node cluster with 16 partitions and fast Raft
// timings, and checks a user-visible promise: kvctl round trips and its JSON
// output, strong reads through every node, failover under kill -9,
// durability across a full restart (SIGTERM and kill -9), refusal of bad
// input, behaviour without quorum, leader balance, /metrics, and a
// staggered bootstrap. Every node
// log is scanned when the test ends: a panic, a fatal runtime error or a
// data race fails the test (kvd and kvctl are built with -race when the
// toolchain can).
//
// # Running it
//
//	go test ./integration/                      # builds kvd and kvctl once, ~2 minutes
//	go test -short ./integration/               # skips every test
//	go test -run KillOne -v ./integration/      # one test, with its measurements
//	go test -artifacts -outputdir /tmp/out ./integration/  # keep the node logs
//
// RINGKV_INTEGRATION_BIN=dir uses prebuilt kvd and kvctl binaries from dir.
//
// # Known bugs
//
// Tests named TestBug... reproduce bugs found in other packages and skip
// themselves unless RINGKV_INTEGRATION_BUGS=1. While such a bug is open,
// the other tests tolerate its signature (a known data race, a known
// shutdown hang) and log it, so that they keep detecting new ones; the
// lists are knownRaces and knownHangs. When a bug is fixed, delete its
// entry and its skip.
package integration
