#!/usr/bin/env bash
# make census: what the kernel does for one operation. A fresh 3-node RingKV
# cluster is driven by `kvctl bench` with each workload in turn; for
# MEASURE_SECONDS in the middle of each run, `perf stat` counts the servers'
# system calls by kind, context switches, wake-ups and page faults, and their
# CPU time, and the script divides each by the operations the nodes served in
# that window (ringkv_requests_total). CPU profiles (make profile) show where
# Go code spends its time but lump the kernel's work into one Syscall6 entry
# and miss the scheduler's; this shows how many of each a request costs.
#
# Needs perf with tracepoint access (root, or kernel.perf_event_paranoid
# at -1): apt-get install linux-perf.
#
# Knobs (environment): WORKLOADS (default "put get-strong get-eventual": the
# names of lib.sh's WORKLOAD_NAMES), MEASURE_SECONDS (6), CLIENTS (64),
# PARTITIONS (64), VALUE_SIZE (100), KEYS (10000), KVD_FLAGS (extra kvd
# flags), RESULTS_DIR, KVD, KVCTL (default ./bin/kvd, ./bin/kvctl; `make
# census` builds them). Writes census.md and the raw perf output to
# bench/results/<UTC timestamp>-census/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

WORKLOADS=${WORKLOADS:-put get-strong get-eventual}
MEASURE_SECONDS=${MEASURE_SECONDS:-6}
load_defaults
read -r -a kvd_flags <<<"${KVD_FLAGS:-}"
results=${RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)-census}
if ! [[ $MEASURE_SECONDS =~ ^[0-9]+$ ]] || ((MEASURE_SECONDS == 0)); then
  die "MEASURE_SECONDS must be a whole number of seconds above 0"
fi
for w in $WORKLOADS; do workload_flags "$w" >/dev/null; done # unknown names stop here

# The events counted, in the table's order: column title, then perf event.
columns=(
  "fdatasync" syscalls:sys_enter_fdatasync
  "write" syscalls:sys_enter_write
  "read" syscalls:sys_enter_read
  "epoll_pwait" syscalls:sys_enter_epoll_pwait
  "futex" syscalls:sys_enter_futex
  "nanosleep" syscalls:sys_enter_nanosleep
  "ctx switches" sched:sched_switch
  "wake-ups" sched:sched_wakeup
  "page faults" exceptions:page_fault_user
)
events=task-clock
for ((i = 1; i < ${#columns[@]}; i += 2)); do events+=",${columns[i]}"; done
command -v perf >/dev/null || die "perf is not installed: apt-get install linux-perf"
perf stat -e "$events" -o /dev/null -- true 2>/dev/null ||
  die "perf cannot count $events here: run as root, or set kernel.perf_event_paranoid to -1"

setup_ringkv_script census census
bench_pid=""
trap 'if [[ -n $bench_pid ]]; then kill -TERM "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi
  stop_servers; rm -rf "$tmp"' EXIT

mkdir -p "$results"
eps=127.0.0.1:7191,127.0.0.1:7192,127.0.0.1:7193
log "starting RingKV (3 nodes, $PARTITIONS partitions, client ports 7191-7193)"
start_ringkv "$tmp" 9 "${kvd_flags[@]}"
pids=$(IFS=,; echo "${server_pids[*]}")

{
  echo "# make census ($(date -u +%Y-%m-%dT%H:%M:%SZ), $KVD of $(git rev-parse --short HEAD 2>/dev/null || echo "an unknown commit"))"
  echo
  echo "$CLIENTS clients, $PARTITIONS partitions, ${VALUE_SIZE}-byte values, $KEYS keys, ${MEASURE_SECONDS} s counted per workload${KVD_FLAGS:+, kvd $KVD_FLAGS}."
  echo "Every count is per operation, summed over the three servers; CPU is their task-clock."
  echo
  header="| workload | ops/s | CPU us"
  rule="|---|---|---"
  for ((i = 0; i < ${#columns[@]}; i += 2)); do header+=" | ${columns[i]}"; rule+="|---"; done
  echo "$header |"
  echo "$rule|"
} >"$results/census.md"

for w in $WORKLOADS; do
  read -r -a wflags <<<"$(workload_flags "$w")"
  proc=KV/Put
  [[ $w == get-* ]] && proc=KV/Get
  [[ $w == mixed-* ]] && proc=KV/ # puts and gets alike
  base=$(requests_served 9 "$proc")
  "$KVCTL" --endpoints "$eps" bench --duration "$((MEASURE_SECONDS + 4))s" --value-size "$VALUE_SIZE" \
    --keys "$KEYS" --timeout 10s -o json "${wflags[@]}" >"$results/bench-$w.json" &
  bench_pid=$!
  # A get run writes every key first; count only once its own requests flow.
  deadline=$((SECONDS + 120))
  until (($(requests_served 9 "$proc") > base + 500)); do
    kill -0 "$bench_pid" 2>/dev/null || die "bench $w ended before its $proc load began"
    ((SECONDS < deadline)) || die "no $proc load after 120s"
    sleep 0.2
  done
  sleep 1 # past the pre-load's last writes and the load's first second
  before=$(requests_served 9 "$proc")
  perf stat -x, -e "$events" -p "$pids" -o "$results/perf-$w.csv" -- sleep "$MEASURE_SECONDS" 2>/dev/null
  after=$(requests_served 9 "$proc")
  wait "$bench_pid" || log "bench $w exited non-zero; see $results/bench-$w.json"
  bench_pid=""
  ops=$((after - before))
  ((ops > 0)) || die "no $proc requests were served while $w was counted"
  # perf -x, lines: value,unit,event,... (task-clock's value is in ms).
  awk -F, -v w="$w" -v ops="$ops" -v secs="$MEASURE_SECONDS" -v order="$events" '
    $1 ~ /^[0-9.]+$/ { v[$3] = $1 }
    END {
      n = split(order, ev, ",")
      row = sprintf("| %s | %.0f | %.1f", w, ops / secs, v["task-clock"] * 1000 / ops)
      for (i = 2; i <= n; i++) row = row sprintf(" | %.3f", v[ev[i]] / ops)
      print row " |"
    }' "$results/perf-$w.csv" >>"$results/census.md"
  log "$w: $ops operations counted; $(tail -n 1 "$results/census.md")"
done

stop_servers
cp "$tmp"/c*.log "$results/"
log "results in $results/census.md:"
cat "$results/census.md" >&2
