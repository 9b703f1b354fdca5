#!/usr/bin/env bash
# Starts a local 3-node RingKV cluster on loopback in the foreground.
# Data and logs live in $RUN_DIR (default ./.run); Ctrl-C stops all three nodes cleanly.
# A second `make run` restarts the same cluster from its data; remove the folder for a fresh one.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
PARTITIONS=${PARTITIONS:-64}
mkdir -p "$RUN_DIR"
pids=()

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping nodes (${pids[*]:-none})..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped. Data kept in $RUN_DIR (rm -rf $RUN_DIR for a fresh cluster)."
}
trap stop_all INT TERM EXIT

join=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303
for i in 1 2 3; do
  ./bin/kvd --name "n$i" --data-dir "$RUN_DIR/n$i" \
    --client-addr "127.0.0.1:710$i" --peer-addr "127.0.0.1:720$i" --gossip-addr "127.0.0.1:730$i" \
    --join "$join" --bootstrap-expect 3 --partitions "$PARTITIONS" \
    >>"$RUN_DIR/n$i.log" 2>&1 &
  pids+=("$!")
done
echo "started kvd n1 n2 n3 (pids ${pids[*]}); logs in $RUN_DIR/n*.log"

deadline=$((SECONDS + 60))
for i in 1 2 3; do
  until curl -fsS "http://127.0.0.1:710$i/readyz" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "node n$i not ready after 60s; last log lines:" >&2
      tail -n 20 "$RUN_DIR/n$i.log" >&2
      exit 1
    fi
    for pid in "${pids[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "a node exited during startup; see $RUN_DIR/n*.log" >&2
        tail -n 20 "$RUN_DIR"/n*.log >&2
        exit 1
      fi
    done
    sleep 0.2
  done
done

cat <<MSG

RingKV is serving: 3 nodes, $PARTITIONS partitions, 3 replicas each.
  client API  127.0.0.1:7101  127.0.0.1:7102  127.0.0.1:7103   (Connect, gRPC, JSON; /metrics /healthz /readyz)

Try, in another terminal:
  export KVCTL_ENDPOINTS=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
  ./bin/kvctl put greeting hello
  ./bin/kvctl get greeting
  ./bin/kvctl get greeting --consistency eventual -o json
  ./bin/kvctl members
  ./bin/kvctl partitions
  ./bin/kvctl status

Press Ctrl-C to stop the cluster.
MSG
wait -n "${pids[@]}" || true
echo "a node exited; see $RUN_DIR/n*.log" >&2
