#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (clang for RocksDB,
# Debian's docker.io and busybox-static for the Docker end-to-end tests, cargo-deb for the
# package), starts containerd and dockerd when none runs, builds the Debian package, then runs
# every test of the workspace in the one release profile —
# the Docker end-to-end tests against Debian 12's docker.io 20.10 — and then the Docker
# end-to-end tests again against a current engine, Debian 13's docker.io 26.1
# (scripts/dockerd-current.sh unpacks it beside the system's). Chromium (Debian's) is installed
# for the web view's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_build_tools
# The web view's tests drive Debian's Chromium headless (tests/web_e2e.rs); curl reads metrics.
apt_need chromium:/usr/bin/chromium curl:curl
export RAFTIPAM_REQUIRE_BROWSER=1
if docker_host=$(bash scripts/dockerd.sh); then
  export RAFTIPAM_DOCKER_HOST="$docker_host"
else
  log "WARNING: no dockerd could be started here; the Docker end-to-end tests will say so and skip"
fi
# The target directory is shared between checkouts (so RocksDB builds once per machine). Each
# checkout's own crates get new hashes there, and rustdoc refuses to pick between two builds of
# one crate (E0460) when it compiles the doc tests: drop our crates' old builds first. Only our
# four crates are rebuilt; RocksDB and every other dependency stay.
cargo clean --release --quiet -p allocator-core -p plugin-shim -p raft-node -p benches
# The Debian package, built from the same release binary the tests use; systemd_e2e installs
# it in a container under systemd (scripts/systemd-test.sh).
RAFTIPAM_DEB=$(bash scripts/package.sh)
export RAFTIPAM_DEB
log "cargo test --release --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo test --release --workspace -- --test-threads="${RAFTIPAM_TEST_THREADS:-2}"

# The Docker version matrix: the same end-to-end tests against the current engine.
if [[ ${RAFTIPAM_SKIP_CURRENT_DOCKER:-} == 1 ]]; then
  log "RAFTIPAM_SKIP_CURRENT_DOCKER=1: not running the Docker tests against the current engine"
  exit 0
fi
current=$(bash scripts/dockerd-current.sh)
trap 'bash scripts/dockerd-current.sh --stop || true' EXIT
log "cargo test --release -p raft-node --test docker_e2e against $(docker -H "$current" version --format '{{.Server.Version}}')"
RAFTIPAM_DOCKER_HOST="$current" \
  RAFTIPAM_DOCKER_ENGINE_ROOT="${RAFTIPAM_DOCKER_CURRENT_CACHE:-$HOME/.cache/raftipam/docker-current}/current" \
  RAFTIPAM_CONTAINERD_SOCK=/run/raftipam-containerd-current/containerd.sock \
  cargo test --release -p raft-node --test docker_e2e -- --test-threads="${RAFTIPAM_TEST_THREADS:-2}"
