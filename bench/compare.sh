#!/usr/bin/env bash
# make compare: the same workloads against a fresh 3-member etcd cluster, then
# against a fresh 3-node RingKV cluster, never both at once, and a table with
# the RingKV/etcd ratio per workload. Results (JSON per run, machine load
# before each, server CPU, the table as JSON and markdown, server logs) go to
# bench/results/<UTC timestamp>/.
#
# ROUNDS (2) repeats that with the order reversed every other round (etcd,
# RingKV, RingKV, etcd: ABBA), each round in round-N/ with its own table, so
# that a machine whose speed drifts during the run (this one's does, by
# 10-35% within minutes) favours neither system; the final table gives the
# mean over the rounds and each round's ratio. ROUNDS=1 is one pass.
#
# Every round starts each system on fresh data directories, removed (and the
# disk synced) once it stops, so that neither system's first fsyncs wait
# behind the other's leftover writes. WARMUP (default 0: none) runs each
# workload unmeasured for that long before measuring it, on both systems.
#
# Knobs (environment): DURATION (10s) per workload, WARMUP (0), CLIENTS (64), PARTITIONS
# (64), VALUE_SIZE (100), KEYS (10000), IDLE_SECONDS (10: the servers' CPU is
# also measured with no load, after start), CONNS (default: the bench tools'
# one connection per node), PROTOCOL (RingKV's client protocol: native, the
# default, or connect), SYSTEMS ("etcd ringkv"; name one to
# run one side), RESULTS_DIR, and the binaries KVD, KVCTL, ETCDBENCH,
# BENCHREPORT (defaults: ./bin/kvd, ./bin/kvctl, bench/bin/etcdbench,
# bench/bin/benchreport; `make compare` builds them) and RINGKV_VERSION (what
# to record for them; default `git describe`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-0}
load_defaults
IDLE_SECONDS=${IDLE_SECONDS:-10}
CONNS=${CONNS:-}
PROTOCOL=${PROTOCOL:-native}
SYSTEMS=${SYSTEMS:-etcd ringkv}
ROUNDS=${ROUNDS:-2}
ETCDBENCH=${ETCDBENCH:-bench/bin/etcdbench}
BENCHREPORT=${BENCHREPORT:-bench/bin/benchreport}
results=${RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

# A bench run stops by itself after DURATION (plus its pre-load); the
# backstop only catches a hung tool.
case $DURATION in
  *ms) dur_s=1 ;;
  *s) dur_s=${DURATION%s} ;;
  *m) dur_s=$((${DURATION%m} * 60)) ;;
  *h) dur_s=$((${DURATION%h} * 3600)) ;;
  *) dur_s=x ;;
esac
[[ $dur_s =~ ^[0-9]+$ ]] || die "DURATION=$DURATION: use whole units such as 10s, 2m or 500ms"
backstop=$((dur_s * 2 + 300))
[[ $WARMUP == 0 || $WARMUP =~ ^[0-9]+(ms|s|m)$ ]] || die "WARMUP=$WARMUP: use 0 or whole units such as 3s or 500ms"
if ! [[ $IDLE_SECONDS =~ ^[0-9]+$ ]] || ((IDLE_SECONDS == 0)); then
  die "IDLE_SECONDS must be a whole number above 0"
fi
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS == 0 || ROUNDS > 10)); then
  die "ROUNDS must be a whole number from 1 to 10"
fi
for sys in $SYSTEMS; do
  [[ $sys == etcd || $sys == ringkv ]] || die "SYSTEMS: unknown system $sys (use etcd and/or ringkv)"
done

for bin in "$KVD" "$KVCTL" "$ETCDBENCH" "$BENCHREPORT"; do
  [[ -x $bin ]] || die "$bin is missing: run 'make compare' (it builds everything first)"
done

tmp=$(mktemp -d /tmp/ringkv-compare.XXXXXX)
bench_pid=""
cleanup() {
  if [[ -n $bench_pid ]]; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  stop_servers
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "interrupted; stopping the cluster"; exit 130' INT TERM

mkdir -p "$results"
conns_flag=()
[[ -n $CONNS ]] && conns_flag=(--conns "$CONNS")


# children_cpu_ms VAR sets VAR to the user+system CPU milliseconds of this
# shell's finished children (the load generators, which share the cores with
# the servers). `times` must run in this shell, not in a subshell: hence no
# $(...) and the file.
children_cpu_ms() {
  local u s total=0 t m sec
  times >"$tmp/times"
  { read -r _ _; read -r u s; } <"$tmp/times"
  for t in "$u" "$s"; do  # like 1m2.345s
    m=${t%%m*} sec=${t#*m}
    sec=${sec%s}
    total=$((total + m * 60000 + ${sec%.*} * 1000 + 10#${sec#*.}))
  done
  printf -v "$1" '%d' "$total"
}

# run_bench DURATION OUT CMD... runs one bench run of CMD for DURATION, its
# JSON to OUT, and returns the tool's exit status. In the background, so
# that Ctrl-C interrupts the wait at once (bash runs no trap while a
# foreground child that handles SIGINT runs).
run_bench() {
  local dur=$1 out=$2 status
  shift 2
  timeout -k 10 "$backstop" "$@" --duration "$dur" --value-size "$VALUE_SIZE" --keys "$KEYS" \
    --timeout 10s -o json "${conns_flag[@]}" >"$out" &
  bench_pid=$!
  if wait "$bench_pid"; then status=0; else status=$?; fi
  bench_pid=""
  return "$status"
}

# run_workloads SYSTEM CMD... runs every workload with CMD plus its flags,
# saving the JSON result, the machine load before it and the CPU the servers
# and the load generator spent during it (pre-load included).
run_workloads() {
  local sys=$1 name flags out t0 t1 c0 c1 status
  shift
  mkdir -p "$rdir/$sys" "$rdir/load"
  for name in "${WORKLOAD_NAMES[@]}"; do
    read -r -a flags <<<"$(workload_flags "$name")"
    if [[ $WARMUP != 0 ]]; then
      run_bench "$WARMUP" /dev/null "$@" "${flags[@]}" ||
        log "$sys $name: the warm-up failed (exit $?); measuring anyway"
    fi
    uptime >"$rdir/load/$sys-$name.txt"
    t0=$(server_cpu_ticks)
    children_cpu_ms c0
    if run_bench "$DURATION" "$tmp/out.json" "$@" "${flags[@]}"; then status=0; else status=$?; fi
    ((status == 0)) || log "$sys $name: the bench tool failed (exit $status); see its JSON or stderr above"
    out=$(cat "$tmp/out.json")
    t1=$(server_cpu_ticks)
    children_cpu_ms c1
    echo "$((t1 - t0)) $(getconf CLK_TCK)" >"$rdir/$sys/$name.cpu"
    echo "$((c1 - c0))" >"$rdir/$sys/$name.clientcpu"
    [[ -n $out ]] && echo "$out" >"$rdir/$sys/$name.json"
    log "$sys $name: ${out:-no result}"
  done
}

# measure_idle SYSTEM: the servers' CPU over IDLE_SECONDS with no load.
measure_idle() {
  local t0 t1
  mkdir -p "$rdir/$1"
  sleep 2
  t0=$(server_cpu_ticks)
  sleep "$IDLE_SECONDS"
  t1=$(server_cpu_ticks)
  echo "$((t1 - t0)) $(getconf CLK_TCK) $IDLE_SECONDS" >"$rdir/$1/idle.cpu"
  log "$1 idle: $((t1 - t0)) CPU ticks in ${IDLE_SECONDS}s"
}

# write_meta FILE DATE [LINE...]: the run's start date and settings, then
# any extra lines.
write_meta() {
  local meta_file=$1 meta_date=$2
  shift 2
  {
    echo "date=$meta_date"
    echo "machine=$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "duration=$DURATION"
    echo "warmup=$WARMUP"
    echo "clients=$CLIENTS"
    echo "conns=${CONNS:-1} per node"
    echo "partitions=$PARTITIONS"
    echo "value_size=$VALUE_SIZE"
    echo "keys=$KEYS"
    echo "ringkv=${RINGKV_VERSION:-$(git describe --always --dirty 2>/dev/null || echo unknown)} ($KVD)"
    printf '%s\n' "$@"
  } >"$meta_file"
}

# run_system SYSTEM: a fresh cluster of SYSTEM (new data directories), its
# idle CPU, every workload, into $rdir; then its data is removed and the disk
# synced, so the next cluster starts fresh on a quiet disk.
run_system() {
  local dir=$tmp/$1-round$round
  mkdir -p "$rdir/logs" "$dir"
  case $1 in
    etcd)
      log "starting etcd (3 members, client ports 7441-7443)"
      start_etcd "$dir"
      measure_idle etcd
      run_workloads etcd "$ETCDBENCH" --endpoints 127.0.0.1:7441,127.0.0.1:7442,127.0.0.1:7443
      stop_servers
      cp "$dir"/e*.log "$rdir/logs/"
      ;;
    ringkv)
      log "starting RingKV (3 nodes, $PARTITIONS partitions, client ports 7121-7123)"
      start_ringkv "$dir" 2
      measure_idle ringkv
      run_workloads ringkv "$KVCTL" --endpoints 127.0.0.1:7121,127.0.0.1:7122,127.0.0.1:7123 --protocol "$PROTOCOL" bench
      stop_servers
      cp "$dir"/c*.log "$rdir/logs/"
      ;;
  esac
  rm -rf "$dir"
  sync
}

etcd_version=()
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  ensure_etcd # once, before the first round (run_system relies on it)
  etcd_version=("etcd=$(etcd --version | sed -n 1p)")
fi
read -r -a order <<<"$SYSTEMS"
start=$SECONDS start_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for ((round = 1; round <= ROUNDS; round++)); do
  rdir=$results
  ((ROUNDS > 1)) && rdir=$results/round-$round
  mkdir -p "$rdir"
  log "round $round of $ROUNDS: ${order[*]}"
  rstart=$SECONDS rstart_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for sys in "${order[@]}"; do
    run_system "$sys"
  done
  write_meta "$rdir/meta.txt" "$rstart_date" "${etcd_version[@]}" "order=${order[*]}" "elapsed=$((SECONDS - rstart))s"
  if ((ROUNDS > 1)); then
    "$BENCHREPORT" "$rdir" >/dev/null
    log "round $round: table in $rdir/compare.md"
  fi
  # ABBA: the next round starts with the system this one ended with.
  for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
    sys=${order[i]} order[i]=${order[j]} order[j]=$sys
  done
done
write_meta "$results/meta.txt" "$start_date" "${etcd_version[@]}" "rounds=$ROUNDS" "elapsed=$((SECONDS - start))s"

"$BENCHREPORT" "$results"
log "results in $results (compare.md, compare.json)"
