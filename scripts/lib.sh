# Shared by scripts/run.sh and scripts/test.sh: one target directory outside the clone (so the
# RocksDB C++ build happens once per machine), one cargo profile (release), and installing the
# Debian packages a step needs when they are missing.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftipam/target}"
export RAFTIPAM_BIN="$CARGO_TARGET_DIR/release/raftipam"

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
