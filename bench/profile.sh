#!/usr/bin/env bash
# make profile: a fresh 3-node RingKV cluster started with --pprof, first at
# rest, then driven by `kvctl bench` with the 64-client put and strong-get
# workloads and the eventual-get one; each time a CPU profile of every node is fetched from
# GET /debug/pprof/profile?seconds=N on its client port. Saves the profiles,
# `go tool pprof -top` summaries (per node and all nodes merged) and the
# bench results in bench/results/<UTC timestamp>-profile/.
#
# Knobs (environment): PROFILE_SECONDS (10), CLIENTS (64), PARTITIONS (64),
# VALUE_SIZE (100), KEYS (10000), RESULTS_DIR, KVD, KVCTL (default ./bin/kvd,
# ./bin/kvctl; `make profile` builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

PROFILE_SECONDS=${PROFILE_SECONDS:-10}
load_defaults
GO=${GO:-go}
results=${RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-profile}
if ! [[ $PROFILE_SECONDS =~ ^[0-9]+$ ]] || ((PROFILE_SECONDS == 0)); then
  die "PROFILE_SECONDS must be a whole number of seconds above 0"
fi
for bin in "$KVD" "$KVCTL"; do
  [[ -x $bin ]] || die "$bin is missing: run 'make profile' (it builds kvd and kvctl first)"
done
kvd_help=$("$KVD" --help 2>&1 || true)
[[ $kvd_help == *-pprof* ]] || die "$KVD has no --pprof flag: rebuild it from a tree that serves /debug/pprof"

tmp=$(mktemp -d /tmp/ringkv-profile.XXXXXX)
bench_pid=""
fetch_pids=()
cleanup() {
  local pid
  for pid in $bench_pid "${fetch_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $bench_pid "${fetch_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_servers
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "interrupted; stopping the cluster"; exit 130' INT TERM

mkdir -p "$results"
eps=127.0.0.1:7131,127.0.0.1:7132,127.0.0.1:7133
log "starting RingKV with --pprof (3 nodes, $PARTITIONS partitions, client ports 7131-7133)"
start_ringkv "$tmp" 3 --pprof
curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:7131/debug/pprof/" ||
  die "kvd started with --pprof does not serve /debug/pprof/ on its client port"

# requests PROCEDURE: see requests_served in lib.sh.
requests() { requests_served 3 "$1"; }

# fetch_profiles NAME takes a CPU profile of every node at once and writes
# `go tool pprof -top` summaries: per node, and all three merged.
fetch_profiles() {
  local name=$1 i
  log "profiling $name for ${PROFILE_SECONDS}s on 3 nodes"
  fetch_pids=()
  for i in 1 2 3; do
    curl -fsS --max-time $((PROFILE_SECONDS + 30)) -o "$results/$name-c$i.pprof" \
      "http://127.0.0.1:713$i/debug/pprof/profile?seconds=$PROFILE_SECONDS" &
    fetch_pids+=("$!")
  done
  for i in "${fetch_pids[@]}"; do wait "$i" || die "fetching a profile failed"; done
  fetch_pids=()
  for i in 1 2 3; do
    "$GO" tool pprof -top -nodecount=40 "$KVD" "$results/$name-c$i.pprof" >"$results/$name-c$i.top.txt" 2>/dev/null
  done
  "$GO" tool pprof -top -nodecount=40 "$KVD" "$results/$name"-c?.pprof >"$results/$name-all.top.txt" 2>/dev/null
  "$GO" tool pprof -top -cum -nodecount=60 "$KVD" "$results/$name"-c?.pprof >"$results/$name-all.topcum.txt" 2>/dev/null
}

# profile NAME PROCEDURE BENCH_FLAGS... starts the bench in the background,
# waits until PROCEDURE requests flow (after a get's pre-load), then profiles.
profile() {
  local name=$1 proc=$2 base deadline
  shift 2
  uptime >"$results/load-$name.txt"
  base=$(requests "$proc")
  "$KVCTL" --endpoints "$eps" bench --duration "$((PROFILE_SECONDS + 4))s" --value-size "$VALUE_SIZE" \
    --keys "$KEYS" --clients "$CLIENTS" --timeout 10s -o json "$@" >"$results/bench-$name.json" &
  bench_pid=$!
  # Requests count only once the pre-load is over: a get run writes every key first.
  deadline=$((SECONDS + 120))
  until (($(requests "$proc") > base + 500)); do
    kill -0 "$bench_pid" 2>/dev/null || die "bench $name ended before its $proc load began"
    ((SECONDS < deadline)) || die "no $proc load after 120s"
    sleep 0.2
  done
  if [[ $name != put ]]; then sleep 1; fi  # the pre-load's last writes drain
  fetch_profiles "$name"
  wait "$bench_pid" || log "bench $name exited non-zero; see $results/bench-$name.json"
  bench_pid=""
  log "$name: $(cat "$results/bench-$name.json")"
}

# With no load first: what the cluster costs at rest (issue 5's idle target).
uptime >"$results/load-idle.txt"
fetch_profiles idle
profile put KV/Put --op put
profile get-strong KV/Get --op get --consistency strong
profile get-eventual KV/Get --op get --consistency eventual

stop_servers
cp "$tmp"/c*.log "$results/"
log "profiles and summaries in $results; top of the merged put profile:"
sed -n '1,25p' "$results/put-all.top.txt" >&2
