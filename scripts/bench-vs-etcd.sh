#!/usr/bin/env bash
# raftipam and etcd side by side, on this machine, in one command. Both as 3 members on
# loopback, each member its own process and data directory, every write synced to disk before
# it is acknowledged (etcd's default WAL fsync; raftipam's synced Raft log). The same workload
# against each, at 1, 16 and 256 clients (each client its own connection): COUNT allocations,
# then their releases.
#   raftipam: `raftipam bench` (the lowest free address of a /8, found by the allocator);
#   etcd:     benches/etcd-load (one key per address, a create-if-absent transaction; the
#             address drawn from a shared counter, so etcd never has to search or retry).
# Prints allocations/s, p50 and p99 for both, the ratio, and the servers' CPU time per
# operation, allocation or release (user+system of the three member processes, from /proc).
# Installs Debian's etcd-server, protobuf-compiler and libprotobuf-dev (for the gRPC client)
# when missing.
# With RAFTIPAM_BENCH_PLOT=FILE.svg it also draws the results (scripts/plot-vs-etcd.py).
# Usage: bash scripts/bench-vs-etcd.sh [COUNT] [ROUNDS]      (default 20000 1)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
count=${1:-20000}
rounds=${2:-1}
[[ $count =~ ^[0-9]+$ && $rounds =~ ^[0-9]+$ ]] || { echo "usage: $0 [COUNT] [ROUNDS]" >&2; exit 2; }
need_build_tools
apt_need etcd-server:/usr/bin/etcd protobuf-compiler:protoc libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto \
  python3:python3 curl:curl
work=$(mktemp -d /tmp/raftipam-vs-etcd.XXXXXX)
raft_pids=() etcd_pids=()
cleanup() {
  for p in "${raft_pids[@]}" "${etcd_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

B=$RAFTIPAM_BIN
[[ -x $B ]] || cargo build --release -p raftipam --bin raftipam
etl_target=${RAFTIPAM_ETCD_LOAD_TARGET:-$HOME/.cache/raftipam/etcd-load-target}
log "building benches/etcd-load (its own target directory: $etl_target)"
(cd benches/etcd-load && CARGO_TARGET_DIR=$etl_target cargo build --release --quiet)
L=$etl_target/release/etcd-load

# etcd: three members, ports 23791-3 (clients) and 23801-3 (peers).
initial=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
for n in 1 2 3; do
  etcd --name "e$n" --data-dir "$work/etcd$n" \
    --listen-client-urls "http://127.0.0.1:2379$n" --advertise-client-urls "http://127.0.0.1:2379$n" \
    --listen-peer-urls "http://127.0.0.1:2380$n" --initial-advertise-peer-urls "http://127.0.0.1:2380$n" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token raftipam-vs-etcd \
    --logger zap --log-level error >"$work/etcd$n.log" 2>&1 &
  etcd_pids+=($!)
  disown
done
etcd_eps=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793
for _ in $(seq 100); do curl -fsS --max-time 1 http://127.0.0.1:23791/health 2>/dev/null | grep -q '"true"' && break; sleep 0.2; done
curl -fsS --max-time 2 http://127.0.0.1:23791/health | grep -q '"true"' || { cat "$work"/etcd*.log; log "etcd did not become healthy"; exit 1; }
etcd_version=$(etcd --version | head -1)

# raftipam: three nodes, ports 17601-3.
eps=()
for n in 1 2 3; do
  addr="127.0.0.1:$((17600 + n))"
  eps+=("$addr")
  "$B" node --id "$n" --listen "$addr" --data-dir "$work/raft$n" >"$work/raft$n.log" 2>&1 &
  raft_pids+=($!)
  disown
done
form_cluster "$B" "${eps[@]}"
raft_eps=$(IFS=,; echo "${eps[*]}")

# cpu PIDS...: user+system clock ticks of these processes so far.
cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "$etcd_version; raftipam $("$B" --version | awk '{print $2}')"
printf '%-8s | %-34s | %-34s | %s\n' clients "raftipam: alloc/s  p50  p99  cpu/op" "etcd: alloc/s  p50  p99  cpu/op" "raftipam/etcd"
for r in $(seq "$rounds"); do
  for clients in 1 16 256; do
    c=$count
    ((clients == 1)) && c=$((count / 10))
    before=$(cpu "${raft_pids[@]}")
    rj=$("$B" --endpoints "$raft_eps" --json bench --clients "$clients" --count "$c")
    raft_cpu=$(($(cpu "${raft_pids[@]}") - before))
    before=$(cpu "${etcd_pids[@]}")
    ej=$("$L" --endpoints "$etcd_eps" --clients "$clients" --count "$c")
    etcd_cpu=$(($(cpu "${etcd_pids[@]}") - before))
    RJ=$rj EJ=$ej RC=$raft_cpu EC=$etcd_cpu HZ=$hz CL=$clients CSV=$work/results.csv python3 - <<'PY'
import json, os
r = next(p for p in json.loads(os.environ["RJ"])["phases"] if p["phase"] == "allocate")
e = next(json.loads(l) for l in os.environ["EJ"].splitlines() if '"allocate"' in l)
hz = int(os.environ["HZ"])
def cpu(ticks, p):  # CPU µs per allocation over both phases (allocate + release: 2 ops each)
    return ticks / hz * 1e6 / max(1, 2 * p["ops"])
def side(p, ticks):
    return f'{p["ops_per_sec"]:>9,.0f} {p["p50_us"]/1000:>6.2f}ms {p["p99_us"]/1000:>6.2f}ms {cpu(ticks, p):>6.0f}µs'
ratio = r["ops_per_sec"] / max(e["ops_per_sec"], 1e-9)
errs = f'  (errors: raftipam {r["errors"]}, etcd {e["errors"]})' if r["errors"] or e["errors"] else ""
print(f'{os.environ["CL"]:<8} | {side(r, int(os.environ["RC"]))} | {side(e, int(os.environ["EC"]))} | {ratio:.1f}x{errs}')
new = not os.path.exists(os.environ["CSV"])
with open(os.environ["CSV"], "a") as f:
    if new:
        f.write("clients,system,ops_per_sec,p50_us,p99_us,cpu_us_per_op\n")
    for name, p, t in (("raftipam", r, int(os.environ["RC"])), ("etcd", e, int(os.environ["EC"]))):
        f.write(f'{os.environ["CL"]},{name},{p["ops_per_sec"]:.0f},{p["p50_us"]},{p["p99_us"]},{cpu(t, p):.0f}\n')
PY
  done
done
if [[ -n ${RAFTIPAM_BENCH_PLOT:-} ]]; then
  python3 scripts/plot-vs-etcd.py "$work/results.csv" "$RAFTIPAM_BENCH_PLOT" \
    "$(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs | cut -c1-24), $(date +%F), $etcd_version"
  log "plot: $RAFTIPAM_BENCH_PLOT"
fi
