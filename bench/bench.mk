# Peer comparison and profiles (issue 5), included by the top Makefile.
# The etcd load generator and the report tool are a separate Go module
# (bench/etcdbench) so that the etcd client never enters RingKV's go.mod.
BENCH_BIN := bench/bin

.PHONY: compare profile bench-tools bench-check bench-clean

## bench-tools: build bench/bin/etcdbench and bench/bin/benchreport.
bench-tools:
	cd bench/etcdbench && $(GO) build -o ../bin/ . ./benchreport

## compare: etcd (installed with apt-get if absent) and RingKV, same workloads, one after the other, in two rounds (ABBA; ROUNDS=1 for one).
compare: build bench-tools
	./bench/compare.sh

## profile: CPU profiles of every kvd (kvd --pprof) at rest and under the 64-client put and strong-get workloads.
profile: build
	./bench/profile.sh

## census: system calls, context switches and page faults per operation of every kvd, counted by perf (WORKLOADS, MEASURE_SECONDS, PARTITIONS, KVD_FLAGS).
.PHONY: census
census: build
	./bench/census.sh

## bench-check: gofmt, go vet and tests of the bench modules; bash -n (and shellcheck, if installed) of the scripts.
bench-check:
	@out=$$(cd bench/etcdbench && gofmt -l .; cd ../multiraft && gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	cd bench/etcdbench && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd bench/multiraft && $(GO) vet ./... && $(GO) test -count=1 ./...
	bash -n bench/lib.sh bench/compare.sh bench/profile.sh bench/ab.sh bench/census.sh
	if command -v shellcheck >/dev/null; then shellcheck -x bench/lib.sh bench/compare.sh bench/profile.sh bench/ab.sh bench/census.sh; fi

bench-clean:
	rm -rf $(BENCH_BIN)

## rebalance: 3-node cluster holding DATA_MB (1024) MB, then a 4th node joins: rebalance time, transfer rate, client p99 before/during.
.PHONY: rebalance
rebalance: build
	./bench/rebalance.sh

## failover: kill -9 the busiest leader of a fresh 3-node cluster: how long writes to its partitions stop (RUNS, PARTITIONS, IDLE_BEFORE_KILL, KVD_FLAGS).
.PHONY: failover
failover: build
	./bench/failover.sh

## ab: two clusters at once (KVD_A/KVD_B, FLAGS_A/FLAGS_B), the same load on both at the same time: servers' CPU per op, immune to the machine's drift.
.PHONY: ab
ab: build
	./bench/ab.sh

## idle: CPU of an idle 3-node cluster at 16, 64 and 256 partitions (PARTITION_COUNTS, IDLE_SECONDS, KVD_FLAGS).
.PHONY: idle
idle: build
	./bench/idle.sh

## multiraft: RingKV's Raft engine against a node-level prototype (bench/multiraft), in process, ABBA rounds (PARTITIONS, CLIENTS, ROUNDS, DURATION).
.PHONY: multiraft
multiraft:
	cd bench/multiraft && $(GO) build -o ../bin/multiraftbench .
	$(BENCH_BIN)/multiraftbench --engine multiraft,hashicorp --partitions $${PARTITIONS:-64} --clients $${CLIENTS:-64} --rounds $${ROUNDS:-4} --duration $${DURATION:-6s}
