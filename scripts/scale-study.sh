#!/usr/bin/env bash
# What a big site costs the three voters, measured on this machine (on demand, ~10 minutes,
# ~3 GiB of memory): a 3-node cluster on loopback (each node its own process and RocksDB,
# every entry synced), then
#   1. the background work of HOSTS simulated Docker hosts (`raftipam bench --hosts`: each 10
#      heartbeats and one reconciliation report, the ratio of the shim's defaults): CPU time
#      and bytes written to disk per operation, by the leader and by all three, and what a
#      1,000-host site costs per hour at the defaults (a heartbeat every 30 s, a report every
#      5 min);
#   2. 1 million allocations kept (`bench --keep`): the snapshot's size and the time to take
#      one (`raftipam backup`), the nodes' resident memory, and a fourth node's catch-up
#      from nothing (`cluster add` returns once it has caught up: a snapshot install);
#   3. the same at 10 million allocations (ten scratch /8 pools of 1 million).
# Or, with SCALE_POOLS=1, instead of 2 and 3:
#   4. a site with many networks: 10,000 pools (/24s) created, then 1 million allocations
#      spread over them (`bench --pools 10000 --keep`), the snapshot, memory and catch-up as
#      in 2, and step 1's host work measured again with that state held.
#
#   bash scripts/scale-study.sh [HOSTS]        (default 10000 simulated hosts)
#   SCALE_HOSTS_ONLY=1 bash scripts/scale-study.sh [HOSTS]     (step 1 only, ~15 s)
#   SCALE_POOLS=1 bash scripts/scale-study.sh [HOSTS]          (steps 1 and 4, ~5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
hosts=${1:-10000}
[[ $hosts =~ ^[0-9]+$ ]] && ((hosts > 0)) || { echo "usage: $0 [HOSTS]" >&2; exit 2; }
B=$RAFTIPAM_BIN
[[ -x $B ]] || { need_build_tools; cargo build --release -p raftipam --bin raftipam; }
work=$(mktemp -d /tmp/raftipam-scale.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_node() { # start_node ID: a node on 127.0.0.1:(17700+ID)
  "$B" node --id "$1" --listen "127.0.0.1:$((17700 + $1))" --data-dir "$work/n$1" >"$work/n$1.log" 2>&1 &
  pids[$1]=$!
}
for n in 1 2 3; do start_node "$n"; done
eps=127.0.0.1:17701,127.0.0.1:17702,127.0.0.1:17703
cli=("$B" --endpoints "$eps" --timeout 10m)
form_cluster "$B" 127.0.0.1:17701 127.0.0.1:17702 127.0.0.1:17703
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
written() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
leader_pid() {
  local l
  l=$("${cli[@]}" --json cluster status | sed -n 's/.*"leader": *\([0-9]*\).*/\1/p' | head -1)
  echo "${pids[${l:-1}]}"
}

log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg); raftipam $("$B" --version | awk '{print $2}')"

# 1. Hosts' background work (a function: step 4 measures it again).
host_work() {
  local lp n dt dw ops all_t all_w lead_t lead_w
  lp=$(leader_pid)
  local -A t0 w0
  for n in 1 2 3; do t0[$n]=$(ticks "${pids[$n]}"); w0[$n]=$(written "${pids[$n]}"); done
  "${cli[@]}" bench --clients 64 --count 1 --hosts "$hosts" --keep | grep -E "^hosts"
  ops=$((hosts * 11))
  all_t=0 all_w=0 lead_t=0 lead_w=0
  for n in 1 2 3; do
    dt=$(($(ticks "${pids[$n]}") - t0[$n])); dw=$(($(written "${pids[$n]}") - w0[$n]))
    all_t=$((all_t + dt)); all_w=$((all_w + dw))
    [[ ${pids[$n]} == "$lp" ]] && { lead_t=$dt; lead_w=$dw; }
  done
  awk -v ops="$ops" -v hz="$hz" -v at="$all_t" -v aw="$all_w" -v lt="$lead_t" -v lw="$lead_w" 'BEGIN {
    lus = lt / hz * 1e6 / ops; aus = at / hz * 1e6 / ops; lb = lw / ops; ab = aw / ops
    printf "host work: %d operations (10 heartbeats + 1 report per host)\n", ops
    printf "  per operation: leader %.0f µs CPU, %.0f bytes written; all three %.0f µs, %.0f bytes\n", lus, lb, aus, ab
    rate = 1000 / 30 + 1000 / 300
    printf "  a 1,000-host site at the defaults: %.1f operations/s = %d log entries an hour;\n", rate, rate * 3600
    printf "    leader %.2f%% of one core, all three %.2f%%; disk written an hour: leader %.0f MiB, all three %.0f MiB\n", rate * lus / 1e4, rate * aus / 1e4, rate * 3600 * lb / 1048576, rate * 3600 * ab / 1048576
  }'
}
host_work

[[ ${SCALE_HOSTS_ONLY:-} == 1 ]] && exit 0

# 2 and 3. Big states: snapshot size and time, memory, a new node's catch-up.
measure() { # measure LABEL NODE_ID
  local t s size
  t=$(date +%s%N)
  "${cli[@]}" backup "$work/backup.bin" >/dev/null
  s=$((($(date +%s%N) - t) / 1000000))
  size=$(stat -c %s "$work/backup.bin")
  echo "$1: snapshot (raftipam backup) $((size / 1048576)) MiB in ${s} ms; resident memory per node: $(rss_mib "${pids[1]}"), $(rss_mib "${pids[2]}"), $(rss_mib "${pids[3]}") MiB"
  start_node "$2"
  for _ in $(seq 50); do "$B" --endpoints "127.0.0.1:$((17700 + $2))" --timeout 1s cluster status >/dev/null 2>&1 && break; sleep 0.2; done
  t=$(date +%s%N)
  "${cli[@]}" cluster add --id "$2" --addr "127.0.0.1:$((17700 + $2))" >/dev/null
  s=$((($(date +%s%N) - t) / 1000000))
  echo "  node $2 joined from nothing and caught up in ${s} ms (resident memory $(rss_mib "${pids[$2]}") MiB)"
  "${cli[@]}" cluster remove --id "$2" >/dev/null
  kill "${pids[$2]}"
  wait "${pids[$2]}" 2>/dev/null || true
  unset "pids[$2]"
}
if [[ ${SCALE_POOLS:-} == 1 ]]; then
  # 4. Many networks: 10,000 /24 pools, 1 million allocations spread over them.
  "${cli[@]}" bench --clients 256 --count 1000000 --pools 10000 --keep | grep -E '^(pools|allocate)'
  measure "1 million allocations in 10,000 pools" 4
  log "step 1 again, with those 10,000 pools and 1 million allocations held"
  host_work
  exit 0
fi
"${cli[@]}" bench --clients 256 --count 1000000 --keep | grep -E '^allocate'
measure "1 million allocations" 4
for k in $(seq 2 10); do
  "${cli[@]}" bench --clients 256 --count 1000000 --keep | grep -E '^allocate' | sed "s/^/pool $k: /"
done
measure "10 million allocations (10 pools)" 5
