#!/usr/bin/env bash
# make bench: starts a fresh 3-node cluster on loopback (ports 7111-7113 etc., data in a temp
# folder), drives it with `kvctl bench`, prints one JSON line per workload and a summary table,
# then stops the cluster by PID. Knobs: DURATION (10s), PARTITIONS (64), VALUE_SIZE (100), KEYS (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
PARTITIONS=${PARTITIONS:-64}
VALUE_SIZE=${VALUE_SIZE:-100}
KEYS=${KEYS:-10000}
dir=$(mktemp -d /tmp/ringkv-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

join=127.0.0.1:7311,127.0.0.1:7312,127.0.0.1:7313
for i in 1 2 3; do
  ./bin/kvd --name "b$i" --data-dir "$dir/b$i" \
    --client-addr "127.0.0.1:711$i" --peer-addr "127.0.0.1:721$i" --gossip-addr "127.0.0.1:731$i" \
    --join "$join" --bootstrap-expect 3 --partitions "$PARTITIONS" >"$dir/b$i.log" 2>&1 &
  pids+=("$!")
done
deadline=$((SECONDS + 60))
for i in 1 2 3; do
  until curl -fsS "http://127.0.0.1:711$i/readyz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "cluster not ready; see logs:" >&2; tail -n 20 "$dir"/b*.log >&2; exit 1; }
    sleep 0.2
  done
done
# Let leader balancing settle so no node leads more than its share.
sleep 8
export KVCTL_ENDPOINTS=127.0.0.1:7111,127.0.0.1:7112,127.0.0.1:7113
run() {
  local name=$1; shift
  local out
  out=$(./bin/kvctl bench --duration "$DURATION" --value-size "$VALUE_SIZE" --keys "$KEYS" -o json "$@" --timeout 10m)
  echo "$out" > "$dir/$name.json"
  printf '%-28s %s\n' "$name" "$out"
}
echo "RingKV bench: 3 nodes on loopback, $PARTITIONS partitions, $VALUE_SIZE-byte values, $KEYS keys, $DURATION per workload"
run put-1client          --op put --clients 1
run put-64clients        --op put --clients 64
run get-strong-64        --op get --consistency strong --clients 64
run get-eventual-64      --op get --consistency eventual --clients 64
run mixed-strong-64      --op mixed --ratio 0.9 --consistency strong --clients 64
run cas-64               --op cas --clients 64
echo
printf '%-22s %12s %9s %9s %7s\n' workload ops/s p50_ms p99_ms errors
for f in put-1client put-64clients get-strong-64 get-eventual-64 mixed-strong-64 cas-64; do
  python3 - "$dir/$f.json" "$f" <<'PY' 2>/dev/null || grep -o '"ops_per_sec":[0-9.]*' "$dir/$f.json"
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<22} {d['ops_per_sec']:>12.0f} {d['p50_ms']:>9.2f} {d['p99_ms']:>9.2f} {d['errors']:>7}")
PY
done
