#!/usr/bin/env bash
# What LAN checks cost a `docker run`: `raftipam up` serving this machine's dockerd, a bridge
# network on a test subnet (the bridge this script's network creates is the only link the
# probes go out on), RUNS timed `docker run -d` (each container keeps its address, so each run
# is a hand-out of a new address; one every ~half second) with --lan-checks off, then on
# (with the sweep ahead, warm: the pool used before the timed runs), then on with
# --sweep-ahead 0 (every hand-out waits for its probe: the cold case). Prints p50 and p90.
# Usage: bash scripts/bench-lan-checks.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
runs=${1:-30}
B=$RAFTIPAM_BIN
[[ -x $B ]] || cargo build --release -p raftipam
docker_host=$(bash scripts/dockerd.sh)
D=(docker -H "$docker_host")
work=$(mktemp -d /tmp/raftipam-bench-lan.XXXXXX)
pid=
cleanup() {
  "${D[@]}" network rm rtlanbench >/dev/null 2>&1 || true
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
one() { # MODE ARGS...: one agent, the network, RUNS timed runs; prints "MODE p50 p90"
  local mode=$1
  shift
  rm -rf "$work/data"
  "$B" up --data-dir "$work/data" --listen 127.0.0.1:17700 --host bench-lan --http off \
    --socket /run/docker/plugins/rtlanbench.sock --reconcile-interval 0s "$@" >"$work/$mode.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -S /run/docker/plugins/rtlanbench.sock ]] && break; sleep 0.1; done
  "${D[@]}" network create --ipam-driver rtlanbench --subnet 10.213.90.0/24 rtlanbench >/dev/null
  for _ in 1 2 3; do "${D[@]}" run --rm --network rtlanbench raftipam-busybox true; done
  sleep 2 # the sweep's first rounds over the pool
  python3 - "$mode" "$runs" "${D[@]}" <<'PY'
import subprocess, sys, time
mode, runs, docker = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
t = []
for i in range(runs):
    # Each container keeps its address, so every run is a hand-out of a new address.
    t0 = time.perf_counter()
    subprocess.run(docker + ["run", "-d", "--name", f"rtlb-{i}", "--network", "rtlanbench",
                             "raftipam-busybox", "sleep", "300"], check=True, stdout=subprocess.DEVNULL)
    t.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.5)  # a container started every ~second or so, as a deployment would
subprocess.run(docker + ["rm", "-f"] + [f"rtlb-{i}" for i in range(runs)], check=True, stdout=subprocess.DEVNULL)
t.sort()
print(f"{mode}: docker run -d, {runs} runs, each a new address: p50 {t[len(t)//2]:.0f} ms, p90 {t[int(len(t)*0.9)]:.0f} ms")
PY
  "${D[@]}" network rm rtlanbench >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}
one "checks off" --lan-checks off
one "checks on, sweep ahead (warm)" --lan-checks on
one "checks on, no sweep (cold: every hand-out probed)" --lan-checks on --sweep-ahead 0
