#!/usr/bin/env bash
# The cost of mutual TLS: `raftipam bench` against a local 3-node cluster (separate processes,
# loopback, RocksDB, every entry synced) with plain TCP and then with TLS, at 1 and 256
# clients, each run ROUNDS times, alternating. Prints bench's own lines.
# Usage: bash scripts/bench-tls.sh [ROUNDS] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
rounds=${1:-3}
count=${2:-50000}
work=$(mktemp -d /tmp/raftipam-bench-tls.XXXXXX)
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

cluster() { # MODE (plain|tls) BASEPORT: start 3 nodes, form the cluster; endpoints in $eps_out
  local mode=$1 base=$2 n tls=() eps=()
  for n in 1 2 3; do
    local addr="127.0.0.1:$((base + n))"
    eps+=("$addr")
    if [[ $mode == tls ]]; then
      "$B" cert create-node --ca-dir "$work/ca" --id "$n" --addr "$addr" --out "$work/$mode-n$n" >/dev/null
      tls=(--tls-dir "$work/$mode-n$n")
    fi
    "$B" node --id "$n" --listen "$addr" --data-dir "$work/$mode-d$n" "${tls[@]}" \
      >"$work/$mode-n$n.log" 2>&1 &
    pids+=($!)
  done
  local admin=()
  [[ $mode == tls ]] && admin=(--tls-dir "$work/admin")
  form_cluster "$B" "${eps[@]}" "${admin[@]}"
  eps_out=$(IFS=,; echo "${eps[*]}")
}

# Not in $(...): the node pids must reach the cleanup trap.
cluster plain 17400
plain=$eps_out
cluster tls 17500
tls=$eps_out
for r in $(seq "$rounds"); do
  for clients in 1 256; do
    c=$count
    ((clients == 1)) && c=$((count / 10))
    echo "== round $r, $clients clients, plain"
    "$B" --endpoints "$plain" bench --clients "$clients" --count "$c" 2>&1 | grep -i "alloc\|error" || true
    echo "== round $r, $clients clients, tls"
    "$B" --endpoints "$tls" --tls-dir "$work/admin" bench --clients "$clients" --count "$c" 2>&1 | grep -i "alloc\|error" || true
  done
done
