# shellcheck shell=bash
# Shared by bench/compare.sh and bench/profile.sh (sourced, not run): start and
# stop 3-member etcd and 3-node RingKV clusters on loopback, by PID, and drive
# them with the load generators. The caller sets `set -euo pipefail`, defines
# $tmp (a fresh temp folder) and $results, and traps EXIT/INT/TERM to
# stop_servers + rm -rf "$tmp".
#
# Ports (chosen to miss make run's 7101-7303 and make bench's 7111-7313):
#   etcd:             client 7441-7443, peer 7451-7453
#   RingKV (compare): client 7121-7123, peer 7221-7223, gossip 7321-7323
#   RingKV (profile): client 7131-7133, peer 7231-7233, gossip 7331-7333
#   RingKV (idle): client 7151-7153; (failover): client 7161-7163 (rebalance uses 7141-7144)
#   RingKV (census): client 7191-7193 (ab uses 7171-7173 and 7181-7183)

server_pids=()   # the cluster now running; never more than one cluster at a time

# setup_ringkv_script TARGET NAME: the common start of a script that runs
# its own RingKV clusters: checks $KVD and $KVCTL (built by `make TARGET`),
# makes $tmp and stops the servers and removes $tmp on exit or interrupt.
setup_ringkv_script() {
  local bin
  for bin in "$KVD" "$KVCTL"; do
    [[ -x $bin ]] || die "$bin is missing: run 'make $1' (it builds kvd and kvctl first)"
  done
  tmp=$(mktemp -d "/tmp/ringkv-$2.XXXXXX")
  trap 'stop_servers; rm -rf "$tmp"' EXIT
  trap 'log "interrupted; stopping the cluster"; exit 130' INT TERM
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# stop_servers sends SIGTERM to every server started here, waits up to 15 s
# for them to exit, then SIGKILLs what is left.
stop_servers() {
  local pid alive i
  ((${#server_pids[@]})) || return 0
  for pid in "${server_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 150; i++)); do
    alive=0
    for pid in "${server_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${server_pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
}

# port_free PORT fails when something already listens on 127.0.0.1:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_ports_free() {
  local p
  for p in "$@"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (another cluster running?); stop it first"
  done
}

# wait_http URL PATTERN SECONDS polls URL until its body matches PATTERN.
wait_http() {
  local url=$1 pattern=$2 deadline=$((SECONDS + $3))
  until curl -fsS --max-time 2 "$url" 2>/dev/null | grep -q "$pattern"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

ensure_etcd() {
  command -v etcd >/dev/null && return 0
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "etcd is not installed and I am not root: apt-get install etcd-server"
    sudo=(sudo)
  fi
  log "installing Debian's etcd-server with apt-get"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq etcd-server >/dev/null
  command -v etcd >/dev/null || die "apt-get installed etcd-server but no etcd binary is on PATH"
}

# start_etcd DIR starts 3 members with data and logs under DIR and waits
# until each reports healthy.
start_etcd() {
  local dir=$1 i cluster=""
  require_ports_free 7441 7442 7443 7451 7452 7453
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:745$i"; done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://127.0.0.1:744$i" --advertise-client-urls "http://127.0.0.1:744$i" \
      --listen-peer-urls "http://127.0.0.1:745$i" --initial-advertise-peer-urls "http://127.0.0.1:745$i" \
      --initial-cluster "$cluster" --initial-cluster-token "ringkv-compare-$$" --initial-cluster-state new \
      --logger zap --log-outputs stderr --log-level warn \
      >"$dir/e$i.log" 2>&1 &
    server_pids+=("$!")
  done
  for i in 1 2 3; do
    wait_http "http://127.0.0.1:744$i/health" '"health":"true"' 60 ||
      { tail -n 20 "$dir"/e*.log >&2; die "etcd member e$i not healthy after 60s; logs above"; }
  done
}

# start_ringkv DIR BASE [kvd flags...] starts 3 nodes with client ports
# 71BASE1-3, peer 72BASE1-3, gossip 73BASE1-3 (BASE is one digit), waits for
# /readyz on each, then for leaders to be spread over the nodes.
start_ringkv() {
  local dir=$1 base=$2 i join="" t0=$SECONDS
  shift 2
  require_ports_free "71${base}1" "71${base}2" "71${base}3" "72${base}1" "72${base}2" "72${base}3" "73${base}1" "73${base}2" "73${base}3"
  for i in 1 2 3; do join+="${join:+,}127.0.0.1:73${base}$i"; done
  for i in 1 2 3; do
    "$KVD" --name "c$i" --data-dir "$dir/c$i" \
      --client-addr "127.0.0.1:71${base}$i" --peer-addr "127.0.0.1:72${base}$i" --gossip-addr "127.0.0.1:73${base}$i" \
      --join "$join" --bootstrap-expect 3 --partitions "$PARTITIONS" "$@" >"$dir/c$i.log" 2>&1 &
    server_pids+=("$!")
  done
  for i in 1 2 3; do
    wait_http "http://127.0.0.1:71${base}$i/readyz" ready 90 ||
      { tail -n 20 "$dir"/c*.log >&2; die "kvd c$i not ready after 90s; logs above"; }
  done
  log "all 3 nodes ready after $((SECONDS - t0))s"
  wait_balanced "127.0.0.1:71${base}1,127.0.0.1:71${base}2,127.0.0.1:71${base}3" 60
}

# wait_balanced ENDPOINTS SECONDS waits until every partition has a leader
# and no node leads more than its share, ceil(P/3), every node leading one
# when P >= 3 (leader balancing runs every 5 s). Past SECONDS it goes on
# with a warning.
wait_balanced() {
  local eps=$1 deadline=$((SECONDS + $2)) counts
  while ((SECONDS < deadline)); do
    counts=$("$KVCTL" --endpoints "$eps" partitions -o json 2>/dev/null |
      grep -o '"leader":"[^"]*"' | sort | uniq -c | awk '{print $1}' | sort -n | tr '\n' ' ') || true
    if awk -v c="$counts" -v p="$PARTITIONS" 'BEGIN { n = split(c, a, " "); s = 0
        for (i = 1; i <= n; i++) s += a[i]
        exit !(n == (p < 3 ? p : 3) && s == p && a[n] <= int((p + 2) / 3)) }'; then
      log "leaders balanced: ${counts% }"
      return 0
    fi
    sleep 1
  done
  log "warning: leaders not balanced after $2s (per-node leader counts: ${counts:-unknown}); measuring anyway"
}

# load_defaults sets the knobs of issue 5's load (64 clients, 64 partitions,
# 100-byte values, 10,000 keys) and the binaries' paths where the
# environment has not: compare.sh, ab.sh, profile.sh and census.sh measure
# the same thing unless told otherwise.
load_defaults() {
  CLIENTS=${CLIENTS:-64}
  PARTITIONS=${PARTITIONS:-64}
  VALUE_SIZE=${VALUE_SIZE:-100}
  KEYS=${KEYS:-10000}
  KVD=${KVD:-./bin/kvd}
  KVCTL=${KVCTL:-./bin/kvctl}
}

# Workloads shared by compare.sh and ab.sh, so both measure the same thing.
# The names are what benchreport expects.
WORKLOAD_NAMES=(put-1 put get-strong get-eventual mixed-strong)

# workload_flags NAME prints the bench flags of a workload (kvctl bench and
# etcdbench take the same ones); CLIENTS is the 64-client workloads' count.
workload_flags() {
  case $1 in
    put-1) echo "--op put --clients 1" ;;
    put) echo "--op put --clients $CLIENTS" ;;
    get-strong) echo "--op get --consistency strong --clients $CLIENTS" ;;
    get-eventual) echo "--op get --consistency eventual --clients $CLIENTS" ;;
    mixed-strong) echo "--op mixed --ratio 0.9 --consistency strong --clients $CLIENTS" ;;
    *) die "unknown workload $1 (known: ${WORKLOAD_NAMES[*]})" ;;
  esac
}

# requests_served BASE PROCEDURE prints how many PROCEDURE (KV/Put, KV/Get)
# requests the three nodes with client ports 71BASE1-3 have served (with
# fewer than three partitions some nodes lead none and see none).
requests_served() {
  local i
  for i in 1 2 3; do curl -fsS --max-time 2 "http://127.0.0.1:71$1$i/metrics" 2>/dev/null || true; done |
    awk -v p="$2" '/^ringkv_requests_total\{/ && index($0, p) { s += $NF } END { printf "%d\n", s }'
}

# server_cpu_ticks prints the user+system CPU ticks used so far by the
# running servers (fields 14 and 15 of /proc/PID/stat).
server_cpu_ticks() {
  local pid total=0 stat
  local -a f
  for pid in "${server_pids[@]}"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }  # drop "pid (comm) "; the rest splits on spaces
    read -r -a f <<<"$stat"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
