#!/usr/bin/env bash
# Starts containerd and dockerd for the end-to-end tests when no Docker daemon answers, and
# builds the `raftipam-busybox` test image from Debian's busybox-static (no image can be pulled).
# Prints the DOCKER_HOST to use. Leaves running daemons alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_need docker.io:dockerd containerd:containerd busybox-static:/bin/busybox iproute2:ip >&2
sock=/var/run/docker.sock
if ! docker -H "unix://$sock" info >/dev/null 2>&1; then
  mkdir -p /var/log/raftipam-ci
  if ! pgrep -x containerd >/dev/null; then
    log "starting containerd"
    nohup containerd >/var/log/raftipam-ci/containerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do [[ -S /run/containerd/containerd.sock ]] && break; sleep 0.5; done
  log "starting dockerd"
  nohup dockerd --iptables=false --ip6tables=false --containerd=/run/containerd/containerd.sock \
    -H "unix://$sock" >/var/log/raftipam-ci/dockerd.log 2>&1 &
  for _ in $(seq 1 120); do docker -H "unix://$sock" info >/dev/null 2>&1 && break; sleep 0.5; done
  if ! docker -H "unix://$sock" info >/dev/null 2>&1; then
    log "dockerd did not come up; its log:"
    tail -30 /var/log/raftipam-ci/dockerd.log >&2 || true
    exit 1
  fi
fi
import_test_image "unix://$sock"
echo "unix://$sock"
