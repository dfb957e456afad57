#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (clang for RocksDB,
# Debian's docker.io and busybox-static for the Docker end-to-end tests), starts containerd and
# dockerd when none runs, then runs every test of the workspace in the one release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_build_tools
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
log "cargo test --release --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo test --release --workspace -- --test-threads="${RAFTIPAM_TEST_THREADS:-2}"
