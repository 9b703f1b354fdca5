#!/usr/bin/env bash
# make failover: how long writes to a partition stop when its leader is
# killed (issue 5 target: within 2 s). A fresh 3-node cluster with kvd's
# default timeouts; one writer per partition; the node leading the most
# partitions is killed with SIGKILL; bench/failover reports, per partition it
# led, the time from the kill to the first acknowledged write. Repeats RUNS
# times on fresh clusters and saves each run's JSON to
# bench/results/<UTC timestamp>-failover/.
#
# Knobs (environment): RUNS (3), PARTITIONS (64), IDLE_BEFORE_KILL (0: the
# writers write through the kill; e.g. 5s: they stop 5 s before it and start
# again at it, so the kill finds every group idle and quiet), KVD_FLAGS
# (extra kvd flags, e.g. "--raft-heartbeat-timeout 500ms"), KVD, KVCTL.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

RUNS=${RUNS:-3}
PARTITIONS=${PARTITIONS:-64}
IDLE_BEFORE_KILL=${IDLE_BEFORE_KILL:-0}
KVD=${KVD:-./bin/kvd}
KVCTL=${KVCTL:-./bin/kvctl}
GO=${GO:-go}
read -r -a extra <<<"${KVD_FLAGS:-}"
results=${RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-failover}
setup_ringkv_script failover failover
mkdir -p "$results"
"$GO" build -o "$tmp/failover" ./bench/failover

eps=127.0.0.1:7161,127.0.0.1:7162,127.0.0.1:7163
for ((run = 1; run <= RUNS; run++)); do
  mkdir -p "$tmp/run$run"
  log "run $run/$RUNS: starting 3 nodes, $PARTITIONS partitions ${extra[*]}"
  start_ringkv "$tmp/run$run" 6 "${extra[@]}"
  # The victim's "Killed" job notice is expected; keep it off the terminal.
  disown -a
  pids="c1=${server_pids[0]},c2=${server_pids[1]},c3=${server_pids[2]}"
  "$tmp/failover" --endpoints "$eps" --pids "$pids" --partitions "$PARTITIONS" --idle-before-kill "$IDLE_BEFORE_KILL" --json "$results/run$run.json" |
    sed "s/^/run $run: /" | tee -a "$results/summary.txt" || log "run $run: some partition did not resume"
  stop_servers
  for i in 1 2 3; do cp "$tmp/run$run/c$i.log" "$results/run$run-c$i.log"; done
  rm -rf "$tmp/run$run"
done
log "results in $results"
