#!/usr/bin/env bash
# CNI at scale: HOSTS simulated CNI hosts, each its own `raftipam shim --cni-socket` (the host
# agent) with its own host certificate, against a local 3-node cluster over mutual TLS
# (separate processes, loopback, RocksDB, every entry synced). Then ADDS ADD calls, spread
# over the hosts, each through the real plugin executable exactly as a runtime runs it (an
# exec with the CNI environment and the configuration on stdin), then as many DELs.
# Prints the wall time of all ADDs and the exec-to-result latency (p50/p90/p99), first one
# call at a time, then PARALLEL at a time. Bounded: every call has the plugin's own timeout.
# Usage: bash scripts/bench-cni.sh [HOSTS] [ADDS] [PARALLEL]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
hosts=${1:-100}
adds=${2:-1000}
parallel=${3:-8}
work=$(mktemp -d /tmp/raftipam-bench-cni.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
B=$RAFTIPAM_BIN
[[ -x $B ]] || cargo build --release -p raftipam
"$B" cert create-ca --ca-dir "$work/ca" >/dev/null
"$B" cert create-admin --ca-dir "$work/ca" --out "$work/admin" >/dev/null
eps=()
for n in 1 2 3; do
  addr="127.0.0.1:$((17600 + n))"
  eps+=("$addr")
  "$B" cert create-node --ca-dir "$work/ca" --id "$n" --addr "$addr" --out "$work/n$n" >/dev/null
  "$B" node --id "$n" --listen "$addr" --data-dir "$work/d$n" --tls-dir "$work/n$n" >"$work/n$n.log" 2>&1 &
  pids+=($!)
done
form_cluster "$B" "${eps[@]}" --tls-dir "$work/admin"
endpoints=$(IFS=,; echo "${eps[*]}")
log "cluster of 3 up; starting $hosts host agents"
for h in $(seq "$hosts"); do
  d="$work/h$h"
  "$B" cert create-host "h$h" --ca-dir "$work/ca" --out "$d/tls" >/dev/null
  "$B" --endpoints "$endpoints" --tls-dir "$d/tls" shim --host "h$h" --socket "$d/docker.sock" \
    --cni-socket "$d/cni.sock" --cni-records "$d/records" --reconcile-interval 0s --heartbeat-interval 0s \
    >"$d/agent.log" 2>&1 &
  pids+=($!)
done
for h in $(seq "$hosts"); do
  for _ in $(seq 200); do [[ -S $work/h$h/cni.sock ]] && break; sleep 0.1; done
  [[ -S $work/h$h/cni.sock ]] || { cat "$work/h$h/agent.log"; log "host agent h$h did not start"; exit 1; }
done
log "$hosts host agents up; every ADD and DEL through $B as a CNI plugin"
python3 scripts/bench_cni.py --bin "$B" --work "$work" --hosts "$hosts" --adds "$adds" --parallel "$parallel"
