#!/usr/bin/env bash
# make ab: an A/B test of two kvd binaries (or one binary with two flag sets)
# that this machine's drift cannot fool. Two 3-node clusters run at the same
# time, and each workload drives both at once with the same load, so both
# see the same neighbours and the same slow or fast minutes. Compare the
# servers' CPU per operation (robust); ops/s is not a fair comparison here,
# because the side with shorter latency takes more of the shared cores.
#
# Knobs (environment): KVD_A and KVD_B (default ./bin/kvd both), FLAGS_A and
# FLAGS_B (extra kvd flags), WORKLOADS (default "put-1 put": the names of
# lib.sh's WORKLOAD_NAMES, as in compare.sh), DURATION (8s),
# CLIENTS (64), PARTITIONS (64), VALUE_SIZE (100), KEYS (10000), KVCTL.
# Swap A and B in a second run: the order the clusters start in matters a
# little. Cluster A uses client ports 7171-7173, B 7181-7183.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

KVD_A=${KVD_A:-./bin/kvd}
KVD_B=${KVD_B:-./bin/kvd}
read -r -a flags_a <<<"${FLAGS_A:-}"
read -r -a flags_b <<<"${FLAGS_B:-}"
WORKLOADS=${WORKLOADS:-put-1 put}
DURATION=${DURATION:-8s}
load_defaults
for bin in "$KVD_A" "$KVD_B" "$KVCTL"; do
  [[ -x $bin ]] || die "$bin is missing: run 'make ab' (it builds kvd and kvctl first) or set KVD_A/KVD_B"
done

for w in $WORKLOADS; do workload_flags "$w" >/dev/null; done # unknown names stop here, not in a subshell

tmp=$(mktemp -d /tmp/ringkv-ab.XXXXXX)
mkdir -p "$tmp/a" "$tmp/b"
pids_a=()
pids_b=()
trap 'server_pids=("${pids_a[@]}" "${pids_b[@]}"); stop_servers; rm -rf "$tmp"' EXIT
trap 'log "interrupted; stopping the clusters"; exit 130' INT TERM

KVD=$KVD_A
start_ringkv "$tmp/a" 7 "${flags_a[@]}"
pids_a=("${server_pids[@]}")
server_pids=()
KVD=$KVD_B
start_ringkv "$tmp/b" 8 "${flags_b[@]}"
pids_b=("${server_pids[@]}")
server_pids=()

# cpu_ticks PID...: user+system CPU ticks of those servers so far.
cpu_ticks() {
  server_pids=("$@")
  server_cpu_ticks
  server_pids=()
}


hz=$(getconf CLK_TCK)
printf '%-13s %-4s %10s %9s %9s %12s\n' workload side ops/s p50_ms p99_ms cpu_us/op
for w in $WORKLOADS; do
  read -r -a wflags <<<"$(workload_flags "$w")"
  a0=$(cpu_ticks "${pids_a[@]}")
  b0=$(cpu_ticks "${pids_b[@]}")
  bench_pids=()
  for side in a b; do
    base=7; [[ $side == b ]] && base=8
    timeout -k 10 300 "$KVCTL" --endpoints "127.0.0.1:71${base}1,127.0.0.1:71${base}2,127.0.0.1:71${base}3" bench \
      --duration "$DURATION" --value-size "$VALUE_SIZE" --keys "$KEYS" --timeout 10s -o json "${wflags[@]}" >"$tmp/$side.json" &
    bench_pids+=("$!")
  done
  wait "${bench_pids[@]}" || log "$w: a bench run failed; see its output above"
  a1=$(cpu_ticks "${pids_a[@]}")
  b1=$(cpu_ticks "${pids_b[@]}")
  for side in a b; do
    ticks=$((a1 - a0)); [[ $side == b ]] && ticks=$((b1 - b0))
    awk -v w="$w" -v s="$side" -v t="$ticks" -v hz="$hz" '
      { for (i = 1; i <= NF; i++) { split($i, kv, ":"); gsub(/[{}"]/, "", kv[1]); v[kv[1]] = kv[2] } }
      END { printf "%-13s %-4s %10.0f %9.2f %9.2f %12.0f\n", w, s, v["ops_per_sec"], v["p50_ms"], v["p99_ms"], (v["ops"] > 0 ? t / hz * 1e6 / v["ops"] : 0) }' \
      RS= FS=, "$tmp/$side.json"
  done
done
