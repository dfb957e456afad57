#!/usr/bin/env bash
# Starts a *current* Docker engine beside the system's docker.io 20.10 (scripts/dockerd.sh), for
# the end-to-end tests: the docker.io and containerd of a Debian suite, by default Debian 13
# (trixie)'s docker.io 26.1 and containerd 1.7; RAFTIPAM_DOCKER_CURRENT_SUITE=forky selects
# Debian forky's docker.io 28.5 and containerd 2.1 instead, as a second instance that runs beside
# the first. They are fetched once into a cache from the Debian mirror the machine's own apt
# sources name (scripts/lib.sh: debian_archive_uris; RAFTIPAM_DEBIAN_MIRROR, a mirror's base URL
# holding debian/ and debian-security/, overrides them) — signature of the suite's InRelease,
# then SHA256 of the index and of each .deb checked — and unpacked there with
# `dpkg-deb -x` (never installed: the system's docker.io stays). Each instance's containerd and
# dockerd have their own roots, sockets and pidfiles, a default bridge of its own (not the system
# dockerd's docker0) and no iptables; the containers run with the machine's runc. Every engine
# discovers IPAM plugins in /run/docker/plugins and /etc/docker/plugins, on purpose.
#
# Per instance (TAG is `current` for trixie, the suite's name otherwise):
#   dockerd      unix:///var/run/raftipam-docker-TAG.sock, /var/lib/raftipam-docker-TAG,
#                exec root /run/raftipam-docker-TAG, pidfile /run/raftipam-docker-TAG.pid
#   containerd   /run/raftipam-containerd-TAG/containerd.sock, root /var/lib/raftipam-containerd-TAG,
#                pidfile /run/raftipam-containerd-TAG.pid
#   cache        $HOME/.cache/raftipam/docker-TAG (RAFTIPAM_DOCKER_CURRENT_CACHE names trixie's;
#                another suite's is docker-TAG beside it); the engine is unpacked in CACHE/current
#   bridge       trixie raftipam-cur0 10.254.254.1/24, forky raftipam-forky0 10.254.253.1/24,
#                sid raftipam-sid0 10.254.252.1/24 (RAFTIPAM_DOCKER_CURRENT_BIP overrides)
#   logs         /var/log/raftipam-ci/{containerd,dockerd}-TAG.log
# Builds the `raftipam-busybox` test image like scripts/dockerd.sh, and prints the DOCKER_HOST:
#   export RAFTIPAM_DOCKER_HOST=$(bash scripts/dockerd-current.sh)
#   export RAFTIPAM_DOCKER_HOST=$(RAFTIPAM_DOCKER_CURRENT_SUITE=forky bash scripts/dockerd-current.sh)
# Leaves running daemons alone. `--stop` stops the selected instance's daemons (by pidfile);
# `--env` prints, one a line, the RAFTIPAM_DOCKER_HOST, RAFTIPAM_DOCKER_ENGINE_ROOT and
# RAFTIPAM_CONTAINERD_SOCK of the selected instance for the tests, and starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

suite=${RAFTIPAM_DOCKER_CURRENT_SUITE:-trixie}
[[ $suite =~ ^[a-z]+$ ]] || { log "RAFTIPAM_DOCKER_CURRENT_SUITE=$suite: not a Debian suite name"; exit 2; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# Every per-instance name derives from TAG; trixie's keep the names they had before there were
# two instances.
current_cache=${RAFTIPAM_DOCKER_CURRENT_CACHE:-$HOME/.cache/raftipam/docker-current}
case $suite in
  trixie) tag=current bridge=raftipam-cur0 bip=10.254.254.1/24 ;;
  forky) tag=forky bridge=raftipam-forky0 bip=10.254.253.1/24 ;;
  sid) tag=sid bridge=raftipam-sid0 bip=10.254.252.1/24 ;;
  *) tag=$suite bridge=raftipam-${suite:0:5}0 bip="" ;;
esac
if [[ $tag == current ]]; then
  cache=$current_cache
else
  cache=$(dirname "$current_cache")/docker-$tag
fi
sock=/var/run/raftipam-docker-$tag.sock
host="unix://$sock"
d_data=/var/lib/raftipam-docker-$tag
d_exec=/run/raftipam-docker-$tag
d_pid=/run/raftipam-docker-$tag.pid
c_root=/var/lib/raftipam-containerd-$tag
c_state=/run/raftipam-containerd-$tag
c_sock=$c_state/containerd.sock
c_pid=/run/raftipam-containerd-$tag.pid
c_name=containerd-$tag
logs=/var/log/raftipam-ci
c_log=$logs/containerd-$tag.log
d_log=$logs/dockerd-$tag.log
what="$suite engine"
# The default bridge. Not --bridge=none: a dockerd so started deletes any docker0 on the host,
# the system dockerd's. A bridge named otherwise must exist before dockerd starts.
bridge_addr=${RAFTIPAM_DOCKER_CURRENT_BIP:-$bip}
if [[ ${1:-} == --env ]]; then
  # What the end-to-end tests need to know about this instance (raftipam/tests/docker_e2e).
  printf '%s\n' "RAFTIPAM_DOCKER_HOST=$host" "RAFTIPAM_DOCKER_ENGINE_ROOT=$cache/current" \
    "RAFTIPAM_CONTAINERD_SOCK=$c_sock"
  exit 0
fi
# The daemons find the unpacked binaries first (dockerd, docker-proxy, containerd, its
# containerd-shim-runc-v2), then the system's: runc (and docker-init) are Debian 12's.
# /usr/local is left out so that no other runc can come first.
sys_path=/usr/sbin:/usr/bin:/sbin:/bin

mkdir -p "$cache"
cache=$(realpath "$cache")
exec 9>"$cache/.lock"
flock 9

# alive PIDFILE: prints the pid from PIDFILE if that process runs a binary from the cache.
alive() {
  local pid exe
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == "$cache"/* ]] || return 1
  echo "$pid"
}

# stop_daemon NAME PIDFILE SECONDS: SIGTERM, then SIGKILL if it has not exited in time.
stop_daemon() {
  local pid
  if ! pid=$(alive "$2"); then
    log "$1 ($what) is not running"
    [[ -e $2 ]] && ! kill -0 "$(<"$2")" 2>/dev/null && rm -f "$2"
    return 0
  fi
  log "stopping $1 ($what, pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 $(($3 * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$1 did not exit within $3 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$2"
}

if [[ ${1:-} == --stop ]]; then
  stop_daemon dockerd "$d_pid" 30
  stop_daemon containerd "$c_pid" 15
  exit 0
elif (($#)); then
  echo "usage: $0 [--stop | --env]" >&2
  exit 2
fi

[[ -n $bridge_addr ]] ||
  { log "no bridge address for suite $suite: set RAFTIPAM_DOCKER_CURRENT_BIP (e.g. 10.254.251.1/24)"; exit 2; }
# Debian's archive and its security archive: the machine's apt sources name them (each
# candidate is tried in turn until one serves the suite's index signed by Debian's key).
main_uris=() sec_uris=()
if [[ -n ${RAFTIPAM_DEBIAN_MIRROR:-} ]]; then
  main_uris=("${RAFTIPAM_DEBIAN_MIRROR%/}/debian")
  sec_uris=("${RAFTIPAM_DEBIAN_MIRROR%/}/debian-security")
else
  while read -r k u; do
    case $k in
      main) main_uris+=("$u") ;;
      security) sec_uris+=("$u") ;;
    esac
  done < <(debian_archive_uris)
fi
if ((${#main_uris[@]} == 0)); then
  srcs=$(apt_source_files | paste -sd' ' -)
  log "ERROR: found no Debian archive in this machine's apt sources (${srcs:-no sources file at all}):" \
    "no enabled 'deb' entry with component main and a suite of this Debian release." \
    "Add the Debian mirror apt should use there (e.g. a deb822 entry 'URIs: http://MIRROR/debian'" \
    "in /etc/apt/sources.list.d/debian.sources), or set RAFTIPAM_DEBIAN_MIRROR to a Debian mirror's" \
    "base URL (the one holding debian/ and debian-security/)"
  exit 1
fi
apt_need curl:curl xz-utils:xz gpgv:gpgv debian-archive-keyring:$keyring docker.io:docker \
  runc:runc busybox-static:/bin/busybox iproute2:ip >&2
arch=$(dpkg --print-architecture)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch URL FILE: downloads over HTTP (Debian's archive; integrity comes from the signatures).
fetch() { curl -fsSL --retry 2 --connect-timeout 20 --max-time 600 -o "$2" "$1"; }

# index ARCHIVE_URI DIST OUT: the signature-checked binary Packages index of DIST/main into OUT.
index() {
  local base="$1/dists/$2" want got
  fetch "$base/InRelease" "$tmp/InRelease" || { log "cannot fetch $base/InRelease"; return 1; }
  if ! gpgv --keyring "$keyring" --output "$tmp/Release" "$tmp/InRelease" 2>"$tmp/gpgv.log"; then
    log "the signature of $base/InRelease does not verify against $keyring:"
    cat "$tmp/gpgv.log" >&2
    return 1
  fi
  want=$(awk -v f="main/binary-$arch/Packages.xz" '/^[^ ]/ {s = ($1 == "SHA256:")} s && $3 == f {print $1}' "$tmp/Release")
  [[ -n $want ]] || { log "$base/InRelease lists no main/binary-$arch/Packages.xz"; return 1; }
  fetch "$base/main/binary-$arch/Packages.xz" "$tmp/Packages.xz" ||
    { log "cannot fetch $base/main/binary-$arch/Packages.xz"; return 1; }
  got=$(sha256sum "$tmp/Packages.xz" | cut -d' ' -f1)
  [[ $got == "$want" ]] ||
    { log "$base/main/binary-$arch/Packages.xz: SHA256 $got, InRelease says $want"; return 1; }
  xz -dc "$tmp/Packages.xz" >"$3"
}

# newest PKG: "VERSION URL SHA256" of PKG's newest version in the fetched indexes.
newest() {
  local best="" line v i
  for ((i = 0; i < n; i++)); do
    while read -r line; do
      v=${line%% *}
      if [[ -z $best ]] || dpkg --compare-versions "$v" gt "${best%% *}"; then
        best="$v $(<"$tmp/url.$i")/${line#* }"
      fi
    done < <(awk -v p="$1" 'BEGIN {RS = ""; FS = "\n"} {
        pk = ""; v = ""; f = ""; h = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Package: /) pk = substr($i, 10)
          else if ($i ~ /^Version: /) v = substr($i, 10)
          else if ($i ~ /^Filename: /) f = substr($i, 11)
          else if ($i ~ /^SHA256: /) h = substr($i, 9)
        }
        if (pk == p && v != "" && f != "" && h != "") print v, f, h
      }' "$tmp/idx.$i")
  done
  [[ -n $best ]] && echo "$best"
}

# The newest of the suite and its security updates (point releases move the latter into the former).
# Each from the first of its archive's candidate URIs that serves it.
n=0
dists=("$suite")
if [[ $suite == sid ]]; then
  : # unstable has no security suite
elif ((${#sec_uris[@]})); then
  dists+=("$suite-security")
else
  log "WARNING: this machine's apt sources name no Debian security archive (no *-security suite): $suite-security is not consulted"
fi
for dist in "${dists[@]}"; do
  if [[ $dist == "$suite" ]]; then uris=("${main_uris[@]}"); else uris=("${sec_uris[@]}"); fi
  for uri in "${uris[@]}"; do
    if index "$uri" "$dist" "$tmp/idx.$n"; then
      echo "$uri" >"$tmp/url.$n"
      n=$((n + 1))
      continue 2
    fi
    rm -f "$tmp/idx.$n"
    log "WARNING: no usable index for $dist from $uri"
  done
done

root=""
if ((n)) && docker_deb=$(newest docker.io) && containerd_deb=$(newest containerd); then
  mkdir -p "$cache/debs" "$cache/roots"
  read -r dv _ _ <<<"$docker_deb"
  read -r cv _ _ <<<"$containerd_deb"
  name="docker.io_${dv//:/%}+containerd_${cv//:/%}"
  root="$cache/roots/$name"
  if [[ ! -e $root/.complete ]]; then
    for deb in "$docker_deb" "$containerd_deb"; do
      read -r _ url sha <<<"$deb"
      file="$cache/debs/$(basename "$url")"
      if [[ ! -f $file ]] || [[ $(sha256sum "$file" | cut -d' ' -f1) != "$sha" ]]; then
        log "downloading $url"
        if ! fetch "$url" "$file.part"; then
          rm -f "$file.part"
          log "ERROR: could not fetch $url"
          exit 1
        fi
        got=$(sha256sum "$file.part" | cut -d' ' -f1)
        if [[ $got != "$sha" ]]; then
          rm -f "$file.part"
          log "ERROR: $url has SHA256 $got, the signed index says $sha"
          exit 1
        fi
        mv "$file.part" "$file"
      fi
    done
    log "unpacking $name into $root"
    rm -rf "$root.tmp"
    mkdir -p "$root.tmp"
    for deb in "$docker_deb" "$containerd_deb"; do
      read -r _ url _ <<<"$deb"
      dpkg-deb -x "$cache/debs/$(basename "$url")" "$root.tmp"
    done
    # docker.io's docker-init links to tini-static of the tini package, not unpacked: drop the
    # dangling link so that dockerd finds the system's docker-init on PATH.
    [[ -e $root.tmp/usr/bin/docker-init ]] || rm -f "$root.tmp/usr/bin/docker-init"
    touch "$root.tmp/.complete"
    rm -rf "$root"
    mv "$root.tmp" "$root"
  fi
  ln -sfn "roots/$name" "$cache/current"
elif [[ -e $cache/current/.complete ]]; then
  root=$(realpath "$cache/current")
  log "WARNING: could not read Debian's $suite index; using the cached $(basename "$root")"
else
  log "ERROR: could not fetch the signed $suite index (docker.io, containerd) from ${main_uris[*]} and nothing is cached in $cache"
  exit 1
fi

path="$root/usr/sbin:$root/usr/bin:$sys_path"
if ! ver=$(PATH=$path dockerd --version 2>&1); then
  log "ERROR: the unpacked dockerd does not run here (it needs glibc >= 2.34): $ver"
  exit 1
fi
runc=$(PATH=$path command -v runc) || { log "ERROR: no runc in $sys_path"; exit 1; }
c_ver=$(PATH=$path containerd --version | awk '{print $3}')
log "$what: $ver; containerd $c_ver; runc: $runc"

containerd_ok() {
  PATH=$path ctr --address "$c_sock" --connect-timeout 1s --timeout 10s version >/dev/null 2>&1
}

mkdir -p "$logs"
if ! docker -H "$host" info >/dev/null 2>&1 && ! alive "$d_pid" >/dev/null; then
  if ! containerd_ok; then
    if ! alive "$c_pid" >/dev/null; then
      log "starting containerd ($what) at $c_sock"
      mkdir -p "$c_root" "$c_state"
      # containerd 2 reads a version 2 file too, but migrates it (a warning) and then still
      # starts its CRI (split into cri.v1.images and cri.v1.runtime): write its own version 3.
      if [[ $c_ver == [01].* ]]; then
        c_conf_ver=2
        c_disabled='"io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"'
      else
        c_conf_ver=3
        c_disabled='"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.grpc.v1.sandbox-controllers", "io.containerd.nri.v1.nri"'
      fi
      cat >"$cache/containerd.toml" <<EOF
# Written by scripts/dockerd-current.sh: a containerd of its own beside the system's.
version = $c_conf_ver
root = "$c_root"
state = "$c_state"
disabled_plugins = [$c_disabled]
[grpc]
  address = "$c_sock"
[debug]
  address = ""
[metrics]
  address = ""
EOF
      # Named containerd-TAG (a link): scripts/dockerd.sh takes any process named exactly
      # `containerd` for the system's. Fd 9 (the lock) closed: the daemons must not keep it.
      ln -sfn containerd "$root/usr/bin/$c_name"
      PATH=$path setsid nohup "$c_name" --config "$cache/containerd.toml" \
        </dev/null >>"$c_log" 2>&1 9>&- &
      echo $! >"$c_pid"
    fi
    for _ in $(seq 1 60); do
      containerd_ok && break
      sleep 0.5
    done
    if ! containerd_ok; then
      log "containerd ($what) did not come up; its log:"
      tail -30 "$c_log" >&2 || true
      exit 1
    fi
  fi
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    log "creating the bridge $bridge ($bridge_addr) for the $what's default network"
    ip link add "$bridge" type bridge
    ip addr add "$bridge_addr" dev "$bridge"
  fi
  ip link set "$bridge" up
  log "starting dockerd ($what) at $host"
  mkdir -p "$d_data" "$d_exec"
  # Its own (empty) daemon.json, so that nothing in /etc/docker/daemon.json applies here.
  [[ -f $cache/daemon.json ]] || echo '{}' >"$cache/daemon.json"
  PATH=$path setsid nohup dockerd --config-file "$cache/daemon.json" \
    --data-root "$d_data" --exec-root "$d_exec" --pidfile "$d_pid" -H "$host" \
    --containerd="$c_sock" --iptables=false --ip6tables=false --bridge="$bridge" \
    </dev/null >>"$d_log" 2>&1 9>&- &
  dpid=$!
fi
for _ in $(seq 1 120); do
  docker -H "$host" info >/dev/null 2>&1 && break
  [[ -n ${dpid:-} ]] && ! kill -0 "$dpid" 2>/dev/null && break # it exited: no use waiting
  sleep 0.5
done
if ! docker -H "$host" info >/dev/null 2>&1; then
  log "dockerd ($what) did not come up; its log:"
  tail -30 "$d_log" >&2 || true
  exit 1
fi
import_test_image "$host"
echo "$host"
