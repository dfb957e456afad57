# Shared by scripts/run.sh and scripts/test.sh: one target directory outside the clone (so the
# RocksDB C++ build happens once per machine), one cargo profile (release), and installing the
# Debian packages a step needs when they are missing.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftipam/target}"
export RAFTIPAM_BIN="${RAFTIPAM_BIN:-$CARGO_TARGET_DIR/release/raftipam}"

log() { printf '==> %s\n' "$*" >&2; }

# apt_need PKG:COMMAND... installs each package whose command (or file) is missing.
apt_need() {
  local missing=() pc pkg probe
  for pc in "$@"; do
    pkg=${pc%%:*}
    probe=${pc#*:}
    if [[ $probe == /* ]]; then [[ -e $probe ]] && continue; else command -v "$probe" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "missing packages: ${missing[*]} — run as root or install them with apt-get"
    return 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# import_test_image DOCKER_HOST: the `raftipam-busybox` test image (no image can be pulled),
# made from Debian's busybox-static, unless that daemon has it.
import_test_image() {
  local host=$1 img a
  docker -H "$host" image inspect raftipam-busybox >/dev/null 2>&1 && return 0
  log "building the raftipam-busybox image from /bin/busybox"
  img=$(mktemp -d)
  mkdir -p "$img/bin"
  cp /bin/busybox "$img/bin/busybox"
  for a in sh sleep ip ping arping cat ls hostname ifconfig true; do ln -s busybox "$img/bin/$a"; done
  tar -C "$img" -c . | docker -H "$host" import - raftipam-busybox >/dev/null
  rm -rf "$img"
}

# RocksDB's bindings need clang and libclang; the C++ build needs g++.
need_build_tools() {
  apt_need clang:clang libclang-dev:/usr/lib/llvm-14/lib/libclang.so g++:g++ make:make
}

# form_cluster BIN EP1 EP2 EP3 [CLIENT_ARGS...]: waits for the node at EP1 to answer,
# initialises it (a one-node cluster) and adds the nodes at EP2 and EP3 (ids 2 and 3) as
# voters. CLIENT_ARGS (e.g. --tls-dir of an admin) go to every call. The benchmark scripts'
# local 3-node clusters are formed with it.
form_cluster() {
  local bin=$1 e1=$2 e2=$3 e3=$4
  shift 4
  local cli=(--endpoints "$e1" "$@")
  for _ in $(seq 50); do "$bin" "${cli[@]}" --timeout 1s cluster status >/dev/null 2>&1 && break; sleep 0.2; done
  "$bin" "${cli[@]}" cluster init >/dev/null
  "$bin" "${cli[@]}" --timeout 10m cluster add --id 2 --addr "$e2" >/dev/null
  "$bin" "${cli[@]}" --timeout 10m cluster add --id 3 --addr "$e3" >/dev/null
}

# apt_source_files: the files apt reads its sources from, in its order: Dir::Etc::sourcelist,
# then the *.list and *.sources files of Dir::Etc::sourceparts (by name, as apt sorts them).
apt_source_files() {
  local srclist=/etc/apt/sources.list srcparts=/etc/apt/sources.list.d f
  if command -v apt-config >/dev/null 2>&1; then
    eval "$(apt-config shell srclist Dir::Etc::sourcelist/f srcparts Dir::Etc::sourceparts/d)"
  fi
  [[ -f $srclist ]] && echo "$srclist"
  for f in "${srcparts%/}"/*; do
    [[ -f $f && ${f##*/} =~ ^[A-Za-z0-9_.-]+\.(list|sources)$ ]] && echo "$f"
  done | LC_ALL=C sort
}

# debian_archive_uris: the Debian archives this machine's apt sources name (apt_source_files;
# one-line and deb822 entries), one "KIND URI" a line, each once, URI without a trailing slash.
# KIND is `main` for an enabled `deb` entry with component main and a suite of this release
# (VERSION_CODENAME of /etc/os-release, or its -updates, -backports, -proposed-updates) or a
# generic one (stable, testing, unstable, sid...), `security` for one with a *-security suite.
# Entries that look like Debian's own (signed by debian-archive-keyring, or a path ending in
# /debian or /debian-security) come first. Only URIs curl fetches (http, https, ftp, file) are
# printed. Prints nothing if apt's sources name no such archive.
debian_archive_uris() {
  local codename files
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || codename=""
  mapfile -t files < <(apt_source_files)
  ((${#files[@]})) || return 0
  awk -v codename="$codename" '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
    function has(list, word,   a, n, i) {
      n = split(list, a, /[ \t]+/)
      for (i = 1; i <= n; i++) if (a[i] == word) return 1
      return 0
    }
    function kind(suite,   b) {
      if (suite ~ /-security$/) return "security"
      b = suite
      sub(/-(updates|backports|backports-sloppy|proposed-updates)$/, "", b)
      if ((codename != "" && b == codename) || b ~ /^(oldoldstable|oldstable|stable|testing|unstable|sid)$/) return "main"
      return ""
    }
    function add(types, uris, suites, comps, signedby,   u, s, nu, ns, i, j, k, uri) {
      if (!has(types, "deb") || !has(comps, "main")) return
      nu = split(trim(uris), u, /[ \t]+/)
      ns = split(trim(suites), s, /[ \t]+/)
      for (i = 1; i <= nu; i++) {
        uri = u[i]
        sub(/\/+$/, "", uri)
        if (uri !~ /^((https?|ftp):\/\/|file:)/) continue
        for (j = 1; j <= ns; j++) {
          k = kind(s[j])
          if (k == "" || ((k, uri) in seen)) continue
          seen[k, uri] = 1
          no++
          kd[no] = k
          ur[no] = uri
          rk[no] = (signedby ~ /debian-archive-keyring/ || uri ~ ("/debian" (k == "security" ? "-security" : "") "$")) ? 0 : 1
        }
      }
    }
    # deb822 (*.sources): paragraphs of "Field: value" lines (continued by indented lines).
    function flush() {
      if (npar && tolower(fld["enabled"]) != "no")
        add(fld["types"], fld["uris"], fld["suites"], fld["components"], fld["signed-by"])
      npar = 0
      key = ""
      split("", fld)
    }
    FNR == 1 { flush() }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^#/) next
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      if ($0 ~ /^[ \t]/) { if (key != "") fld[key] = fld[key] " " trim($0); next }
      p = index($0, ":")
      if (!p) next
      key = tolower(trim(substr($0, 1, p - 1)))
      fld[key] = trim(substr($0, p + 1))
      npar++
      next
    }
    # One-line (*.list): TYPE [OPTIONS] URI SUITE COMPONENT...
    {
      line = $0
      sub(/#.*/, "", line)
      line = trim(line)
      if (line == "") next
      type = line
      sub(/[ \t].*/, "", type)
      rest = trim(substr(line, length(type) + 1))
      opts = ""
      if (rest ~ /^\[/) {
        e = index(rest, "]")
        if (!e) next
        opts = substr(rest, 2, e - 2)
        rest = trim(substr(rest, e + 1))
      }
      n = split(rest, f, /[ \t]+/)
      if (n < 3) next
      comps = ""
      for (i = 3; i <= n; i++) comps = comps " " f[i]
      sb = ""
      if (match(opts, /signed-by=[^ \t]*/)) sb = substr(opts, RSTART, RLENGTH)
      add(type, f[1], f[2], comps, sb)
    }
    END {
      flush()
      for (r = 0; r < 2; r++) for (i = 1; i <= no; i++) if (rk[i] == r) print kd[i], ur[i]
    }' "${files[@]}"
}
