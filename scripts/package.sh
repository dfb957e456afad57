#!/usr/bin/env bash
# Builds the Debian package: the release binary, its manual pages (`raftipam man`) and shell
# completions, then `cargo deb --no-build` with the metadata in raftipam/Cargo.toml (installs
# cargo-deb once with `cargo install`, from the registry cargo is configured with, if missing).
# Prints the .deb's path on stdout.
#
#   bash scripts/package.sh            # then: sudo apt install ./raftipam_*.deb (path printed)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_build_tools
apt_need dpkg-dev:dpkg-shlibdeps >&2
if ! command -v cargo-deb >/dev/null 2>&1; then
  log "installing cargo-deb (once; a few minutes)"
  cargo install --locked --quiet cargo-deb >&2
fi
log "building raftipam (release)"
cargo build --release -p raftipam --bin raftipam >&2
# Crash points are for the chaos harness's builds only; a crash point's name in the binary
# means they were compiled in (`fail_point!` leaves nothing behind otherwise).
if grep -qa 'log::after_purge' "$RAFTIPAM_BIN"; then
  log "ERROR: $RAFTIPAM_BIN carries the chaos harness's crash points (feature failpoints): build the package alone, \`cargo build --release -p raftipam\`, not with the workspace's test build"
  exit 1
fi
pkg="$CARGO_TARGET_DIR/release/pkg"
rm -rf "$pkg"
mkdir -p "$pkg/man" "$pkg/completions"
"$RAFTIPAM_BIN" man "$pkg/man" >&2
gzip -9n "$pkg"/man/*.1
"$RAFTIPAM_BIN" completions bash >"$pkg/completions/raftipam.bash"
"$RAFTIPAM_BIN" completions zsh >"$pkg/completions/_raftipam"
"$RAFTIPAM_BIN" completions fish >"$pkg/completions/raftipam.fish"
log "cargo deb -p raftipam --no-build"
deb=$(cargo deb -p raftipam --no-build --quiet 2>/dev/null | tail -1) || {
  cargo deb -p raftipam --no-build >&2 || true
  log "ERROR: cargo deb failed (its output is above)"
  exit 1
}
[[ -f $deb ]] || { log "ERROR: cargo deb printed '$deb', which is no file"; exit 1; }
log "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
