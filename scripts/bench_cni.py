#!/usr/bin/env python3
"""The driver of scripts/bench-cni.sh: runs the raftipam CNI plugin as a runtime does and
times each call from exec to result. Standard library only."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

SUBNET = "10.214.0.0/16"


def conf(work, host):
    return json.dumps({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "macvlan",
        "ipam": {"type": "raftipam", "subnet": SUBNET, "gateway": "10.214.0.1",
                 "socket": f"{work}/h{host}/cni.sock"},
    }).encode()


def call(binary, work, command, host, cid):
    env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
           "CNI_NETNS": "/proc/1/ns/net", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    t0 = time.perf_counter()
    p = subprocess.run([binary], input=conf(work, host), env=env, capture_output=True, timeout=120)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{command} {cid} on h{host} failed ({p.returncode}): {p.stdout!r} {p.stderr!r}")
    addr = None
    if command == "ADD":
        addr = json.loads(p.stdout)["ips"][0]["address"]
    return dt, addr


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def run(binary, work, hosts, jobs, parallel, command):
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as ex:
        out = list(ex.map(lambda j: call(binary, work, command, j[0], j[1]), jobs))
    wall = time.perf_counter() - t0
    lat = [o[0] for o in out]
    print(f"{command}: {len(jobs)} calls from {hosts} hosts, {parallel} at a time: {wall:.2f} s "
          f"({len(jobs) / wall:.0f}/s); exec to result p50 {pct(lat, 0.5):.1f} ms, "
          f"p90 {pct(lat, 0.9):.1f} ms, p99 {pct(lat, 0.99):.1f} ms")
    return [o[1] for o in out]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bin", required=True)
    a.add_argument("--work", required=True)
    a.add_argument("--hosts", type=int, default=100)
    a.add_argument("--adds", type=int, default=1000)
    a.add_argument("--parallel", type=int, default=8)
    o = a.parse_args()
    jobs = [(1 + i % o.hosts, f"c{i}") for i in range(o.adds)]
    # Each host's first ADD also joins the pool and reserves its gateway (once per host and
    # pool, as a real host does once): done first, not timed.
    warm = [(h, "warm") for h in range(1, o.hosts + 1)]
    for command in ("ADD", "DEL"):
        with ThreadPoolExecutor(max_workers=o.parallel) as ex:
            list(ex.map(lambda j: call(o.bin, o.work, command, j[0], j[1]), warm))
    # One at a time first (the latency a single runtime sees), a tenth of the calls.
    few = jobs[: max(1, o.adds // 10)]
    run(o.bin, o.work, o.hosts, few, 1, "ADD")
    run(o.bin, o.work, o.hosts, few, 1, "DEL")
    addrs = run(o.bin, o.work, o.hosts, jobs, o.parallel, "ADD")
    if len(set(addrs)) != len(addrs):
        raise SystemExit("an address was handed out twice")
    print(f"{len(addrs)} distinct addresses")
    run(o.bin, o.work, o.hosts, jobs, o.parallel, "DEL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
