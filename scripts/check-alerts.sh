#!/usr/bin/env bash
# Checks what the package ships for Prometheus and Grafana (/usr/share/raftipam/):
#   - packaging/alerts/raftipam.rules.yml with `promtool check rules`;
#   - its unit tests, packaging/alerts/raftipam.rules.test.yml, with `promtool test rules`;
#   - every query of packaging/grafana/raftipam-dashboard.json: Grafana's variables replaced
#     by sample values, each written as a recording rule into a throwaway rules file that
#     `promtool check rules` parses.
# Installs Debian's prometheus package (for promtool) when promtool is missing. Runs every
# check, says which failed, and exits with status 1 if any did.
#
#   bash scripts/check-alerts.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

rules=packaging/alerts/raftipam.rules.yml
tests=packaging/alerts/raftipam.rules.test.yml
dashboard=packaging/grafana/raftipam-dashboard.json

apt_need prometheus:promtool python3:python3 || exit 1

failed=()
check() {
  local what=$1
  shift
  log "$what"
  "$@" || failed+=("$what")
}

check "promtool check rules $rules" promtool check rules "$rules"
check "promtool test rules $tests" promtool test rules "$tests"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The dashboard's queries as recording rules, one group per panel ("panel ID: TITLE"), each
# rule named dashboard:panel_ID:REFID; queries.tsv maps those names to the queries.
dashboard_rules() {
  python3 - "$dashboard" "$tmp/dashboard.rules.yml" "$tmp/queries.tsv" <<'EOF'
import json, re, sys

src, out, tsv = sys.argv[1:4]
try:
    with open(src) as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"{src}: not a readable JSON document: {e}")

# Grafana's own variables, and a sample value for each of the dashboard's.
builtin = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
           "__range_ms": "3600000", "__interval_ms": "60000"}
own = {v["name"]: "raftipam" for v in dash.get("templating", {}).get("list", [])}
errors = []

def substitute(expr, where):
    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in builtin:
            return builtin[name]
        if name in own:
            return own[name]
        errors.append(f"{where}: unknown variable ${name} in {expr!r}")
        return m.group(0)
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", one, expr)

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

groups, rows = [], []
for p in panels(dash.get("panels", [])):
    if p.get("type") == "row":
        continue
    where = f"panel {p.get('id')}: {p.get('title', '')}"
    targets = p.get("targets", [])
    if not targets:
        errors.append(f"{where}: no query")
    ds = p.get("datasource", {})
    if not (isinstance(ds, dict) and ds.get("uid") == "${DS_PROMETHEUS}"):
        errors.append(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
    rules = []
    for t in targets:
        expr = t.get("expr", "")
        if not expr.strip():
            errors.append(f"{where}: query {t.get('refId')} is empty")
            continue
        name = f"dashboard:panel_{p.get('id')}:{t.get('refId')}"
        rules.append({"record": name, "expr": substitute(expr, where)})
        rows.append(f"{name}\t{where}\t{expr}")
    if rules:
        groups.append({"name": where, "rules": rules})

if not rows:
    errors.append(f"{src}: no query found")
# JSON is YAML: promtool reads this as a rules file.
with open(out, "w") as f:
    json.dump({"groups": groups}, f, indent=1)
with open(tsv, "w") as f:
    f.write("\n".join(rows) + "\n")
for e in errors:
    print(e, file=sys.stderr)
print(f"{len(rows)} queries in {len(groups)} panels", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

parse_dashboard_queries() {
  local out rc
  out=$(promtool check rules "$tmp/dashboard.rules.yml" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  if ((rc != 0)); then
    # Name each query that did not parse, as the dashboard has it.
    grep -o '"dashboard:panel_[0-9]*:[A-Za-z0-9]*"' <<<"$out" | tr -d '"' | sort -u |
      while read -r name; do
        awk -F'\t' -v n="$name" '$1 == n { split(n, a, ":"); printf "  %s, query %s: %s\n", $2, a[3], $3 }' "$tmp/queries.tsv"
      done
  fi
  return "$rc"
}

check "the queries of $dashboard" dashboard_rules
# Written unless the dashboard is no JSON document.
if [[ -s $tmp/dashboard.rules.yml ]]; then
  check "promtool parses every query of $dashboard" parse_dashboard_queries
fi

if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
log "alerts and dashboard: all checks passed"
