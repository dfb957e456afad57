#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (clang for RocksDB,
# Debian's docker.io and busybox-static for the Docker end-to-end tests, cargo-deb for the
# package), starts containerd and dockerd when none runs, builds the Debian package, then runs
# every test of the workspace in the one release profile —
# the Docker end-to-end tests against Debian 12's docker.io 20.10 — and then the Docker
# end-to-end tests again against two current engines, one after the other: Debian 13's
# docker.io 26.1 and Debian forky's docker.io 28.5 (scripts/dockerd-current.sh unpacks each
# beside the system's; RAFTIPAM_SKIP_CURRENT_DOCKER=1 skips the first, RAFTIPAM_SKIP_DOCKER_28=1
# the second; each run is bounded by RAFTIPAM_DOCKER_E2E_TIMEOUT seconds, default 1800).
# Chromium (Debian's) is installed for the web view's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_build_tools
# The web view's tests drive Debian's Chromium headless (raftipam/tests/cli/web.rs); curl reads metrics.
apt_need chromium:/usr/bin/chromium curl:curl
# The CNI tests run Debian's reference plugins (macvlan, bridge in /usr/lib/cni) and Podman 4.3
# with its CNI backend, with raftipam as their IPAM (raftipam/tests/cli/cni.rs).
apt_need containernetworking-plugins:/usr/lib/cni/macvlan podman:/usr/bin/podman
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
cargo clean --release --quiet -p allocator-core -p plugin-shim -p raft-node -p raftipam -p raftipam-history -p raftipam-chaos -p raftipam-compat -p benches
# Lints over every crate and target, in the one release profile (so the dependencies'
# build scripts, RocksDB's among them, are shared with the build): clippy and rustdoc, with
# every warning an error (the workspace's lints are in Cargo.toml).
log "cargo clippy --release --workspace --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings
log "cargo doc --release --workspace --no-deps (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --quiet
# The library crates package as they would be published (no upload; each crate's build is the
# workspace's, checked above, so the package is not compiled a second time).
log "cargo publish --dry-run (allocator-core, plugin-shim, raft-node)"
cargo publish --dry-run --no-verify --allow-dirty --quiet -p allocator-core -p plugin-shim -p raft-node
# The alerting rules and the dashboard: promtool checks and unit-tests them.
bash scripts/check-alerts.sh
# The previous release's binary, for the rolling-upgrade test (proof/chaos/tests/upgrade.rs):
# built once per machine from its commit (scripts/old-release.sh), before the package so that
# the package's build links the current binary again.
RAFTIPAM_OLD_BIN=$(bash scripts/old-release.sh)
export RAFTIPAM_OLD_BIN
# The Debian package, built from the same release binary the tests use; systemd_e2e installs
# it in a container under systemd (scripts/systemd-test.sh).
RAFTIPAM_DEB=$(bash scripts/package.sh)
export RAFTIPAM_DEB
log "cargo test --release --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo test --release --workspace -- --test-threads="${RAFTIPAM_TEST_THREADS:-2}"

# The Docker version matrix: the same end-to-end tests against the current engines, each
# started by scripts/dockerd-current.sh (RAFTIPAM_DOCKER_CURRENT_SUITE selects the instance) and
# stopped on exit, whatever happens.
started=()
stop_engines() {
  local s
  for s in "${started[@]}"; do
    RAFTIPAM_DOCKER_CURRENT_SUITE=$s bash scripts/dockerd-current.sh --stop || true
  done
}
trap stop_engines EXIT

# docker_e2e_on SUITE: starts that suite's engine and runs the Docker end-to-end tests against
# it, bounded (timeout signals the whole process group: cargo, the tests and their children).
docker_e2e_on() {
  local suite=$1 host vars
  started+=("$suite")
  host=$(RAFTIPAM_DOCKER_CURRENT_SUITE=$suite bash scripts/dockerd-current.sh)
  mapfile -t vars < <(RAFTIPAM_DOCKER_CURRENT_SUITE=$suite bash scripts/dockerd-current.sh --env)
  log "cargo test --release -p raftipam --test docker_e2e against $(docker -H "$host" version --format '{{.Server.Version}}') ($suite: ${vars[*]})"
  env "${vars[@]}" timeout --kill-after=30 "${RAFTIPAM_DOCKER_E2E_TIMEOUT:-1800}" \
    cargo test --release -p raftipam --test docker_e2e -- --test-threads="${RAFTIPAM_TEST_THREADS:-2}"
}

if [[ ${RAFTIPAM_SKIP_CURRENT_DOCKER:-} == 1 ]]; then
  log "RAFTIPAM_SKIP_CURRENT_DOCKER=1: not running the Docker tests against Debian 13's docker.io 26.1"
else
  docker_e2e_on trixie
fi
if [[ ${RAFTIPAM_SKIP_DOCKER_28:-} == 1 ]]; then
  log "RAFTIPAM_SKIP_DOCKER_28=1: not running the Docker tests against Debian forky's docker.io 28.5"
else
  docker_e2e_on forky
fi
