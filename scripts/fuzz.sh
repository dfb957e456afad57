#!/usr/bin/env bash
# Fuzzing on demand (not part of scripts/test.sh: it needs the nightly toolchain): cargo-fuzz
# (libFuzzer) on the state machine's command programs, the snapshot/backup decoder, the Docker
# plugin's router, and raft-node's decoders of bytes from others: connections (framing, both
# channels' requests, log entries), snapshots sent by a leader, the TOML config file. Each target runs for a bounded time and prints how many inputs it
# executed; new corpus entries land in <crate>/fuzz/corpus/<target>/ (commit the interesting
# ones: `--cmin` minimises each corpus first). The same targets replay their corpora on stable
# in every test run (allocator-core/tests/fuzz_corpus.rs, plugin-shim/tests/fuzz_router.rs,
# raft-node/tests/node/fuzz_corpus.rs and the raftipam binary's config tests).
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [--cmin]     (default 600 s a target)
#   FUZZ_TARGETS="plugin-shim:router" bash scripts/fuzz.sh 1200   (some targets only)
# Built without sanitizers (-s none): the crates are safe Rust (plugin-shim's one unsafe call,
# building a packet socket's address in probe/socket.rs, is not on a fuzzed path), and libFuzzer still catches
# every panic, hang (-timeout) and runaway allocation (-rss_limit_mb, -malloc_limit_mb).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
secs=${1:-600}
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [--cmin]" >&2; exit 2; }
cmin=${2:-}
rustup toolchain list | grep -q '^nightly' || { log "the nightly toolchain is needed: rustup toolchain install nightly"; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# raft-node (and raftipam through it) links RocksDB: their fuzz builds links the library the main build compiled
# (librocksdb-sys takes a prebuilt one from ROCKSDB_LIB_DIR) instead of a second C++ build.
rocksdb_lib() {
  local a
  a=$(ls -t "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1)
  if [[ -z $a ]]; then
    {
      log "building raftipam once first (RocksDB's C++ library, 10-20 minutes)"
      need_build_tools
      cargo build --release -p raftipam --bin raftipam
    } >&2
    a=$(ls -t "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a | head -1)
  fi
  dirname "$a"
}
targets=${FUZZ_TARGETS:-allocator-core:apply_program allocator-core:snapshot_decode plugin-shim:router plugin-shim:cni_input plugin-shim:lan_frames raft-node:wire raft-node:snapshot raftipam:config_file}
if [[ $targets == *raft-node:* || $targets == *raftipam:* ]]; then
  ROCKSDB_LIB_DIR=$(rocksdb_lib)
  export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
fi
# The fuzz crates have their own target directories (instrumented builds share nothing).
unset CARGO_TARGET_DIR
for pt in $targets; do
  crate=${pt%%:*} target=${pt#*:}
  (
    cd "$crate"
    if [[ $cmin == --cmin ]]; then
      cargo +nightly fuzz cmin -s none "$target" >/dev/null 2>&1 || log "cmin $target failed; corpus left as is"
    fi
    log "fuzzing $crate/$target for ${secs}s"
    out=$(mktemp)
    # Programs of up to 128 commands: long enough to fill the small pools and wrap serial
    # cursors, short enough for thousands of programs a second.
    extra=()
    [[ $target == apply_program ]] && extra=(-max_len=512)
    # -rss_limit_mb bounds memory; -timeout flags any input slower than 10 s as a hang.
    if ! nice -n 10 cargo +nightly fuzz run -s none "$target" -- -max_total_time="$secs" \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 "${extra[@]}" >"$out" 2>&1; then
      tail -40 "$out"
      log "FAILED: $crate/$target (artifacts in $crate/fuzz/artifacts/$target/)"
      exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo '?')
    log "$crate/$target: $runs executions in ${secs}s, no crash, no hang, no leak past 2 GB"
    rm -f "$out"
  )
done
