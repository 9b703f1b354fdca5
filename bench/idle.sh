#!/usr/bin/env bash
# make idle: CPU of a fresh, idle 3-node cluster, as a percentage of one
# core summed over the three kvd processes, for each partition count in
# PARTITION_COUNTS (issue 5 target: under 10% at 256 partitions). Each
# cluster settles for SETTLE seconds (leaders balanced), then is measured for
# IDLE_SECONDS. Extra kvd flags: KVD_FLAGS.
#
# Knobs (environment): PARTITION_COUNTS ("16 64 256"), IDLE_SECONDS (20),
# SETTLE (10), KVD_FLAGS, KVD, KVCTL.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

PARTITION_COUNTS=${PARTITION_COUNTS:-16 64 256}
IDLE_SECONDS=${IDLE_SECONDS:-20}
SETTLE=${SETTLE:-10}
KVD=${KVD:-./bin/kvd}
KVCTL=${KVCTL:-./bin/kvctl}
read -r -a extra <<<"${KVD_FLAGS:-}"
setup_ringkv_script idle idle
hz=$(getconf CLK_TCK)
for PARTITIONS in $PARTITION_COUNTS; do
  mkdir -p "$tmp/p$PARTITIONS"
  start_ringkv "$tmp/p$PARTITIONS" 5 "${extra[@]}"
  sleep "$SETTLE"
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(server_cpu_ticks)
  sleep "$IDLE_SECONDS"
  t1=$(server_cpu_ticks)
  awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$IDLE_SECONDS" -v p="$PARTITIONS" -v l="$load" -v f="${KVD_FLAGS:-defaults}" \
    'BEGIN { printf "idle CPU, %d partitions (%s): %.1f%% of one core (3 nodes together; load1 before %s)\n", p, f, 100 * t / hz / s, l }'
  stop_servers
  rm -rf "$tmp/p$PARTITIONS"
done
