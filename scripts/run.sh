#!/usr/bin/env bash
# The main job: build raftipam and run `raftipam up`, a one-node cluster initialised on first
# start, with Docker's IPAM plugin socket at /run/docker/plugins/raftipam.sock. Run it before
# (or while) dockerd runs, then: docker network create --ipam-driver raftipam --subnet ... NAME
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_build_tools
log "building raftipam (release; the first build compiles RocksDB: 10-20 minutes on 2 cores)"
cargo build --release -p raftipam --bin raftipam
exec "$RAFTIPAM_BIN" up "$@"
