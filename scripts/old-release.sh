#!/usr/bin/env bash
# Builds the previous release's `raftipam` binary for the rolling-upgrade test and prints its
# path: release 0.1.0 is commit 4b9aa6a. It is built from a git worktree of that commit in the
# shared target directory, so RocksDB's C++ build is reused.
#
# Two checkouts of one workspace name their crates' artifacts alike in one target directory:
# a build of one can leave the other's crates looking fresh. So the workspace crates are
# cleaned before and after the old build, the old binary is copied out at once, and the
# current `raftipam` package is cleaned too, so the next build links its own binary again.
# A clone without the commit (a shallow one) says so and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
release=0.1.0
commit=4b9aa6a
out="$CARGO_TARGET_DIR/releases/$release/raftipam"
if [[ -x $out ]] && [[ $("$out" version 2>/dev/null) == "raftipam $release" ]]; then
  echo "$out"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  log "ERROR: this clone has no commit $commit (release $release), which the rolling-upgrade test builds: fetch the whole history (git fetch --unshallow) and run again"
  exit 1
fi
need_build_tools
src="$CARGO_TARGET_DIR/releases/$release/src"
mkdir -p "$(dirname "$src")"
git worktree remove --force "$src" >/dev/null 2>&1 || rm -rf "$src"
git worktree prune
git worktree add --detach "$src" "$commit" >&2
clean_ours() {
  (cd "$src" && cargo clean --release --quiet -p allocator-core -p plugin-shim -p raft-node) >&2
}
clean_ours
log "building raftipam $release ($commit) for the upgrade test"
(cd "$src" && cargo build --release --quiet -p raft-node --bin raftipam) >&2
cp "$CARGO_TARGET_DIR/release/raftipam" "$out.tmp"
mv "$out.tmp" "$out"
clean_ours
cargo clean --release --quiet -p raftipam >&2
rm -f "$CARGO_TARGET_DIR/release/raftipam"
git worktree remove --force "$src" >&2
[[ $("$out" version) == "raftipam $release" ]] || { log "ERROR: $out says $("$out" version), not raftipam $release"; exit 1; }
echo "$out"
