#!/usr/bin/env bash
# make rebalance: how long a 3-node cluster holding DATA_MB takes to rebalance
# onto a 4th node, how fast the replicas travel, and what the move costs the
# clients. Steps:
#   1. a fresh 3-node cluster (ports 7141-7143, 7241-7243, 7341-7343; data
#      in a temp folder), PARTITIONS partitions, kvd's default controller
#      settings (KVD_FLAGS adds flags to every node);
#   2. loads DATA_MB of VALUE_SIZE values (`kvctl bench --op get -n 1`,
#      whose pre-load writes every key once);
#   3. baseline: a light background load (`kvctl bench --op mixed`, BG_CLIENTS
#      clients, 90% strong gets, 1 KiB values over BG_KEYS keys) for
#      BASELINE, its p99;
#   4. the same background load again, then a 4th node (ports 7144, 7244,
#      7344) started with --join and no --bootstrap-expect; polls `kvctl plan
#      -o json` until nothing moves, no nonvoter is left and the new node
#      holds voters; stops the background load (SIGTERM: it prints what it
#      measured so far);
#   5. prints a summary and writes everything to bench/results/<UTC
#      timestamp>-rebalance/: rebalance.json (the numbers), summary.txt,
#      each bench's JSON, plan and status snapshots, `uptime` before each
#      phase, the server logs.
#
# Transfer rate = the growth of raft_bytes_sent (kvctl status, summed over
# the nodes) from the start of the 4th node to the end of the move, divided
# by the move time. It includes the background load's own replication,
# which is small next to the move (bg_replication_bytes_estimate in the JSON:
# its puts x 1.1 KB x 2 followers).
#
# Knobs (environment): DATA_MB (1024), VALUE_SIZE (65536), PARTITIONS (16),
# LOAD_CLIENTS (16), BG_CLIENTS (4), BG_KEYS (256), BASELINE (20s),
# MOVE_TIMEOUT (seconds, 1800), KVD_FLAGS (extra kvd flags, e.g.
# "--max-moves 4"), KVD, KVCTL (./bin/kvd, ./bin/kvctl: `make rebalance`
# builds them), RINGKV_VERSION (recorded; default `git describe`),
# RESULTS_DIR. Needs curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DATA_MB=${DATA_MB:-1024}
VALUE_SIZE=${VALUE_SIZE:-65536}
PARTITIONS=${PARTITIONS:-16}
LOAD_CLIENTS=${LOAD_CLIENTS:-16}
BG_CLIENTS=${BG_CLIENTS:-4}
BG_KEYS=${BG_KEYS:-256}
BASELINE=${BASELINE:-20s}
MOVE_TIMEOUT=${MOVE_TIMEOUT:-1800}
KVD_FLAGS=${KVD_FLAGS:-}
KVD=${KVD:-./bin/kvd}
KVCTL=${KVCTL:-./bin/kvctl}
results=${RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-rebalance}
version=${RINGKV_VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}

for n in DATA_MB VALUE_SIZE PARTITIONS LOAD_CLIENTS BG_CLIENTS BG_KEYS MOVE_TIMEOUT; do
  [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n=${!n}: want a whole number above 0"
done
for bin in "$KVD" "$KVCTL"; do
  [[ -x $bin ]] || die "$bin is missing: run 'make rebalance' (it builds kvd and kvctl first)"
done
for tool in curl jq; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install $tool)"
done
read -r -a kvd_flags <<<"$KVD_FLAGS"

# The background load overwrites its BG_KEYS keys (the first bench keys)
# with small values, so the load writes that many more large ones.
keys=$(((DATA_MB * 1048576 + VALUE_SIZE - 1) / VALUE_SIZE + BG_KEYS))
founders=127.0.0.1:7141,127.0.0.1:7142,127.0.0.1:7143
all=$founders,127.0.0.1:7144

tmp=$(mktemp -d /tmp/ringkv-rebalance.XXXXXX)
bg_pid=""
cleanup() {
  if [[ -n $bg_pid ]]; then
    kill -TERM "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
  fi
  stop_servers
  if [[ -d $results ]]; then
    mkdir -p "$results/logs"
    cp "$tmp"/*.log "$results/logs/" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "interrupted; stopping the cluster"; exit 130' INT TERM

mkdir -p "$results"
kvctl() { "$KVCTL" --endpoints "$all" "$@"; }

# raft_sent prints raft_bytes_sent summed over the nodes that answer.
raft_sent() {
  local out
  out=$(kvctl status -o json 2>/dev/null) || true # exits 1 when a node is down, still prints
  jq '[.[] | .raft_bytes_sent // 0] | add // 0' <<<"${out:-[]}" 2>/dev/null || echo 0
}

# bg_start NAME DURATION starts the background load in the background.
bg_start() {
  "$KVCTL" --endpoints "$founders" bench --op mixed --ratio 0.9 --consistency strong \
    --clients "$BG_CLIENTS" --keys "$BG_KEYS" --value-size 1024 --duration "$2" --timeout 10s -o json \
    >"$results/$1.json" 2>"$tmp/$1.err" &
  bg_pid=$!
}

# bg_wait waits for the background load; a SIGTERM'd bench exits 1 after
# printing its JSON, which is what we want.
bg_wait() {
  wait "$bg_pid" 2>/dev/null || true
  bg_pid=""
}

# moved prints "settled" once the plan shows nothing moving, nothing
# under-replicated, no nonvoter and some voter on c4; else a progress line.
moved() {
  local out
  out=$(kvctl plan -o json 2>/dev/null) || { echo "no plan"; return; }
  jq -r '
    ([.partitions[] | select(.voters | index("c4"))] | length) as $on
    | ([.partitions[] | .nonvoters // [] | length] | add) as $nv
    | if .moving == 0 and .under_replicated == 0 and $nv == 0 and $on > 0
      then "settled \($on)"
      else "moving=\(.moving) nonvoters=\($nv) under_replicated=\(.under_replicated) voters_on_c4=\($on)" end' <<<"$out" ||
    echo "no plan"
}

log "RingKV rebalance bench: $DATA_MB MB as $keys values of $VALUE_SIZE B, $PARTITIONS partitions; results in $results"
uptime >"$results/uptime-start.txt"
require_ports_free 7144 7244 7344
start_ringkv "$tmp" 4 "${kvd_flags[@]}"

t0=$SECONDS
uptime >"$results/uptime-load.txt"
"$KVCTL" --endpoints "$founders" bench --op get -n 1 --keys "$keys" --value-size "$VALUE_SIZE" \
  --clients "$LOAD_CLIENTS" --timeout 60s -o json >"$results/load.json"
load_s=$((SECONDS - t0))
log "loaded $DATA_MB MB in ${load_s}s"
"$KVCTL" --endpoints "$founders" status -o json >"$results/status-loaded.json" || true

uptime >"$results/uptime-baseline.txt"
bg_start baseline "$BASELINE"
bg_wait
log "baseline: $(jq -c '{ops_per_sec, p50_ms, p99_ms, errors}' "$results/baseline.json")"

# The move: background load first (its pre-load of BG_KEYS small keys
# takes a moment), then the 4th node.
uptime >"$results/uptime-move.txt"
bg_start during "${MOVE_TIMEOUT}s"
sleep 2
sent0=$(raft_sent)
start_ns=$(date +%s%N)
"$KVD" --name c4 --data-dir "$tmp/c4" \
  --client-addr 127.0.0.1:7144 --peer-addr 127.0.0.1:7244 --gossip-addr 127.0.0.1:7344 \
  --join "127.0.0.1:7341,127.0.0.1:7342,127.0.0.1:7343" --partitions "$PARTITIONS" "${kvd_flags[@]}" \
  >"$tmp/c4.log" 2>&1 &
server_pids+=("$!")
state="" last_log=0
while :; do
  state=$(moved)
  [[ $state == settled* ]] && break
  elapsed=$((($(date +%s%N) - start_ns) / 1000000000))
  ((elapsed < MOVE_TIMEOUT)) || die "not rebalanced after ${MOVE_TIMEOUT}s: $state; see kvctl plan (logs in $results/logs)"
  if ((elapsed - last_log >= 10)); then
    log "moving for ${elapsed}s: $state, $(($(raft_sent) - sent0)) bytes sent by Raft"
    last_log=$elapsed
  fi
  sleep 1
done
end_ns=$(date +%s%N)
sent1=$(raft_sent)
kill -TERM "$bg_pid" 2>/dev/null || true
bg_wait
uptime >"$results/uptime-end.txt"
kvctl plan -o json >"$results/plan-final.json" || true
kvctl status -o json >"$results/status-final.json" || true
kvctl partitions -o json >"$results/partitions-final.json" || true

move_s=$(awk -v a="$start_ns" -v b="$end_ns" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
bytes=$((sent1 - sent0))
c4_bytes=$(du -sb "$tmp/c4" | cut -f1)
deleted=$(grep -c 'msg="deleted replica"' "$tmp/c4.log" || true)
failed_steps=$(cat "$tmp"/c*.log | grep -c 'configuration step failed' || true)
voters_c4=${state#settled }

jq -n \
  --argjson data_mb "$DATA_MB" --argjson value_size "$VALUE_SIZE" --argjson keys "$keys" \
  --argjson partitions "$PARTITIONS" --arg kvd_flags "$KVD_FLAGS" --argjson load_s "$load_s" \
  --argjson move_s "$move_s" --argjson raft_bytes "$bytes" --argjson c4_dir_bytes "$c4_bytes" \
  --argjson voters_c4 "$voters_c4" --argjson c4_deleted_replicas "$deleted" --argjson failed_steps "$failed_steps" \
  --slurpfile load "$results/load.json" --slurpfile before "$results/baseline.json" --slurpfile during "$results/during.json" \
  --arg load_start "$(cat "$results/uptime-start.txt")" --arg load_move "$(cat "$results/uptime-move.txt")" \
  --arg load_end "$(cat "$results/uptime-end.txt")" --arg version "$version" \
  '{
    version: $version, data_mb: $data_mb, value_size: $value_size, keys: $keys, partitions: $partitions, kvd_flags: $kvd_flags,
    load_seconds: $load_s, load_mb_per_s: (($data_mb / $load_s) * 10 | round / 10), load_errors: $load[0].errors,
    rebalance_seconds: $move_s, voters_on_new_node: $voters_c4,
    raft_bytes_sent_during_move: $raft_bytes, transfer_mb_per_s: (($raft_bytes / 1048576 / $move_s) * 10 | round / 10),
    new_node_data_dir_bytes: $c4_dir_bytes,
    bg_replication_bytes_estimate: (($during[0].ops * 0.1 * 1100 * 2) | round),
    new_node_deleted_replicas: $c4_deleted_replicas, configuration_steps_failed: $failed_steps,
    before: ($before[0] | {ops_per_sec, p50_ms, p99_ms, p999_ms, max_ms, errors}),
    during: ($during[0] | {ops_per_sec, p50_ms, p99_ms, p999_ms, max_ms, errors, duration_s}),
    uptime: {start: $load_start, move: $load_move, end: $load_end}
  }' >"$results/rebalance.json"

{
  echo "RingKV rebalance: 3 -> 4 nodes, $DATA_MB MB ($keys x $VALUE_SIZE B), $PARTITIONS partitions${KVD_FLAGS:+, kvd $KVD_FLAGS}"
  jq -r '"load:       \(.load_seconds) s (\(.load_mb_per_s) MB/s, \(.load_errors) errors)",
    "rebalance:  \(.rebalance_seconds) s until plan showed nothing moving; \(.voters_on_new_node) of \(.partitions * 3) voters on the new node",
    "transfer:   \(.raft_bytes_sent_during_move) bytes sent by Raft = \(.transfer_mb_per_s) MB/s; new node data dir \(.new_node_data_dir_bytes) bytes",
    "new node deleted \(.new_node_deleted_replicas) replicas while catching up; \(.configuration_steps_failed) configuration steps failed",
    "client p99 before: \(.before.p99_ms) ms (p50 \(.before.p50_ms), \(.before.ops_per_sec) ops/s, \(.before.errors) errors)",
    "client p99 during: \(.during.p99_ms) ms (p50 \(.during.p50_ms), \(.during.ops_per_sec) ops/s, \(.during.errors) errors)",
    "load average: start \(.uptime.start | sub(".*load average: "; "")), move \(.uptime.move | sub(".*load average: "; "")), end \(.uptime.end | sub(".*load average: "; ""))"' \
    "$results/rebalance.json"
} | tee "$results/summary.txt"
