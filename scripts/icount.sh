#!/usr/bin/env bash
# Instructions per operation of the core's hot paths, counted by valgrind's callgrind inside
# the measured functions of benches/src/bin/icount.rs only (setup not counted). Times vary
# between machines of the same kind; these counts do not: they sit beside the criterion
# times in the README. Installs valgrind if missing. On demand, not part of the test suite.
#
#   bash scripts/icount.sh [CASE...]      (default: every case; `icount --list` names them)
#
# The /8 cases fill 16 million addresses under valgrind first: a few minutes each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_need valgrind:valgrind bc:bc
cargo build --release -q -p benches --bin icount
bin=$CARGO_TARGET_DIR/release/icount
mapfile -t cases < <(if (($#)); then printf '%s\n' "$@"; else "$bin" --list | cut -f1; fi)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-28s %12s %12s  %s\n' case N "instr/op" unit
for c in "${cases[@]}"; do
  case $c in
    fill/*) n=100000 ;;
    *) n=20000 ;;
  esac
  unit=$("$bin" --list | awk -F'\t' -v c="$c" '$1 == c {print $2}')
  [[ -n $unit ]] || { echo "unknown case $c (icount --list)" >&2; exit 2; }
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" --toggle-collect='*measured_*' \
    "$bin" "$c" "$n" 2>"$out/log" >/dev/null || { cat "$out/log" >&2; exit 1; }
  ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p;s/^totals: *\([0-9]*\).*/\1/p' "$out/cg" | head -1)
  [[ -n $ir ]] || { echo "no instruction total in callgrind's output for $c" >&2; exit 1; }
  [[ $c == fill/slash16 ]] && ((n > 65534)) && n=65534
  printf '%-28s %12d %12.1f  %s\n' "$c" "$n" "$(echo "$ir / $n" | bc -l)" "$unit"
done
