#!/usr/bin/env bash
# A lab of network namespaces on one machine: a Linux bridge as the LAN, three Docker hosts and
# one legacy host (no Docker) on it. Each Docker host is a netns with a veth into the bridge, its
# own containerd + dockerd in a private mount namespace (its own /run/docker/plugins) and, in
# raftipam mode, a raftipam node listening on its LAN address with the plugin socket in that
# private plugins directory; nodes and the CLI talk mutual TLS (certificates in DIR/tls).
# See ARCHITECTURE.md, "The lab".
#
# Use as a library (`source lab/lab.sh`) or as a command:
#   lab.sh check                      exit 0 if a lab can run here, 77 (with the reason) if not
#   lab.sh up DIR MODE                MODE = raftipam | default; DIR must not exist
#   lab.sh down DIR                   kill everything, remove netns, cgroups, DIR (idempotent)
#   lab.sh sweep                      `down` every lab whose owner (LAB_OWNER_PID at `up`) died
#   lab.sh kill-host DIR N            kill -9 host N's raftipam node and dockerd
#   lab.sh start-host DIR N           start host N's node (raftipam mode) and dockerd again
#   lab.sh cut DIR N | heal DIR N     take host N's LAN link down / up (the bridge-side port)
#   lab.sh network DIR N [NAME]       create the macvlan network NAME (default `lan`) on host N
#   lab.sh docker DIR N ARGS...       docker against host N's dockerd
#   lab.sh raftipam DIR N ARGS...     the raftipam CLI in host N's netns, --endpoints = all nodes
#   lab.sh legacy DIR CMD...          CMD in the legacy host's netns
#   lab.sh in DIR HOST CMD...         CMD in a lab netns (h1, h2, h3, legacy, lan)
#   lab.sh arp DIR IP                 "RESPONDERS MACS": how many answer ARP for IP (legacy host)
#
# Layout of DIR: lab.env (names and addresses); hN/ per Docker host: docker.sock,
# containerd.sock, plugins/ (bound over /run/docker/plugins), raft/, *.log, *.pid.
# Everything the lab starts has DIR in its command line or runs in a lab netns, which is how
# `down` finds it. Every wait is bounded.

LAB_SUBNET_PREFIX=${LAB_SUBNET_PREFIX:-10.231.0}
LAB_HOSTS=(h1 h2 h3)
LAB_PORT=7379
LAB_IMAGE=raftipam-busybox
LAB_REGISTRY=/run/raftipam-lab

lab_log() { printf '[lab] %s\n' "$*" >&2; }
lab_die() {
  lab_log "ERROR: $*"
  return 1
}

lab_host_ip() { # N -> LAN address of Docker host N (1..3); legacy -> the legacy host's
  case $1 in
  legacy) echo "$LAB_SUBNET_PREFIX.20" ;;
  *) echo "$LAB_SUBNET_PREFIX.1$1" ;;
  esac
}
lab_gateway() { echo "$LAB_SUBNET_PREFIX.1"; }
lab_subnet() { echo "$LAB_SUBNET_PREFIX.0/24"; }
lab_endpoints() { echo "$(lab_host_ip 1):$LAB_PORT,$(lab_host_ip 2):$LAB_PORT,$(lab_host_ip 3):$LAB_PORT"; }

lab_check() {
  local why=
  if [[ $(id -u) -ne 0 ]]; then
    why="not root"
  else
    local c
    for c in ip nsenter unshare dockerd containerd docker busybox timeout; do
      command -v "$c" >/dev/null 2>&1 || why="$why missing $c;"
    done
    if [[ -z $why ]]; then
      local probe="rlabprobe$$"
      if ! ip netns add "$probe" 2>/dev/null; then
        why="cannot create a network namespace"
      else
        ip -n "$probe" link add b0 type bridge 2>/dev/null || why="no bridge links in a netns"
        ip -n "$probe" link add v0 type veth peer name v1 2>/dev/null || why="$why no veth links"
        ip -n "$probe" link add m0 link v0 type macvlan mode bridge 2>/dev/null || why="$why no macvlan links"
        ip netns del "$probe"
      fi
      unshare -m --propagation private true 2>/dev/null || why="$why unshare -m fails"
    fi
  fi
  if [[ -n $why ]]; then
    echo "the netns lab cannot run here: $why" >&2
    return 77
  fi
}

# Reads DIR/lab.env.
lab_load() {
  LAB_DIR=$(cd "$1" 2>/dev/null && pwd) || LAB_DIR=$1
  [[ -f $LAB_DIR/lab.env ]] || lab_die "$LAB_DIR is not a lab (no lab.env)" || return 1
  # shellcheck disable=SC1091
  source "$LAB_DIR/lab.env"
}

lab_ns() { echo "${LAB_ID}-$1"; } # h1 | h2 | h3 | legacy | lan

lab_docker() { # N ARGS...
  local n=$1
  shift
  timeout 120 docker -H "unix://$LAB_DIR/h$n/docker.sock" "$@"
}

lab_in() { # NETNS-SHORT CMD... : CMD in that lab netns (network only: /sys stays the root one)
  local ns
  ns=$(lab_ns "$1")
  shift
  nsenter --net="/run/netns/$ns" -- "$@"
}

lab_raftipam() { # N ARGS...
  local n=$1
  shift
  lab_in "h$n" timeout 60 "$RAFTIPAM_BIN" "$@" --endpoints "$(lab_endpoints)" --tls-dir "$LAB_DIR/tls/admin"
}

# Waits up to SECONDS for CMD to succeed.
lab_wait() {
  local secs=$1
  shift
  local end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  "$@" >/dev/null 2>&1
}

lab_up() { # DIR MODE
  local dir=$1 mode=$2
  [[ $mode == raftipam || $mode == default ]] || lab_die "mode must be raftipam or default, not '$mode'" || return 1
  [[ ! -e $dir ]] || lab_die "$dir exists; a lab wants a fresh directory" || return 1
  if [[ $mode == raftipam ]]; then
    [[ -x ${RAFTIPAM_BIN:-} ]] || lab_die "RAFTIPAM_BIN must name the raftipam binary (got '${RAFTIPAM_BIN:-}')" || return 1
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local id
  id="rlab$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
  cat >"$dir/lab.env" <<EOF
LAB_ID=$id
LAB_MODE=$mode
LAB_SUBNET_PREFIX=$LAB_SUBNET_PREFIX
RAFTIPAM_BIN=${RAFTIPAM_BIN:-}
EOF
  lab_load "$dir" || return 1
  # Registered with the pid that owns the lab, so `sweep` can tear down labs whose owner died
  # without tearing them down (a test run killed with SIGKILL).
  mkdir -p "$LAB_REGISTRY"
  printf '%s %s\n' "${LAB_OWNER_PID:-$PPID}" "$LAB_DIR" >"$LAB_REGISTRY/$LAB_ID"
  lab_log "$LAB_ID ($mode) in $LAB_DIR"

  # The LAN: a bridge in its own netns, so the root namespace is not touched.
  local lan
  lan=$(lab_ns lan)
  ip netns add "$lan" || return 1
  ip -n "$lan" link set lo up
  ip -n "$lan" link add br0 type bridge || return 1
  ip -n "$lan" link set br0 up
  local h ns n
  for h in "${LAB_HOSTS[@]}" legacy; do
    ns=$(lab_ns "$h")
    ip netns add "$ns" || return 1
    ip -n "$lan" link add "$h" type veth peer name eth0 netns "$ns" || return 1
    ip -n "$lan" link set "$h" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr add "$(lab_host_ip "${h#h}")/24" dev eth0
  done
  for n in 1 2 3; do
    mkdir -p "$LAB_DIR/h$n/plugins" "$LAB_DIR/h$n/raft"
  done

  if [[ $mode == raftipam ]]; then
    lab_make_certs || return 1
    for n in 1 2 3; do lab_start_node "$n" || return 1; done
    lab_raftipam 1 cluster init >/dev/null || lab_die "cluster init failed" || return 1
    for n in 2 3; do
      lab_raftipam 1 cluster add --id "$n" --addr "$(lab_host_ip "$n"):$LAB_PORT" >/dev/null ||
        lab_die "cluster add $n failed" || return 1
    done
  fi
  for n in 1 2 3; do lab_start_containerd "$n" || return 1; done
  for n in 1 2 3; do lab_start_dockerd "$n" || return 1; done
  for n in 1 2 3; do lab_wait_dockerd "$n" || return 1; done
  lab_import_image || return 1
  lab_log "$LAB_ID up: hosts $(lab_host_ip 1) $(lab_host_ip 2) $(lab_host_ip 3), legacy $(lab_host_ip legacy)"
}

lab_make_certs() { # the lab's CA, a node certificate per host (named hN), an admin certificate
  local t="$LAB_DIR/tls" n
  "$RAFTIPAM_BIN" cert create-ca --ca-dir "$t/ca" >/dev/null || return 1
  for n in 1 2 3; do
    "$RAFTIPAM_BIN" cert create-node --ca-dir "$t/ca" --id "$n" --name "h$n" \
      --addr "$(lab_host_ip "$n"):$LAB_PORT" --out "$t/h$n" >/dev/null || return 1
  done
  "$RAFTIPAM_BIN" cert create-admin --ca-dir "$t/ca" --out "$t/admin" >/dev/null
}

lab_start_node() { # N
  local n=$1 d="$LAB_DIR/h$1"
  rm -f "$d/plugins/raftipam.sock"
  # The socket lands in hN/plugins, which is /run/docker/plugins for that host's dockerd.
  # nsenter execs the node (no fork), so $! is the node's pid. Reconciliation compares with
  # this host's own dockerd, not the machine's.
  nsenter --net="/run/netns/$(lab_ns "h$n")" -- "$RAFTIPAM_BIN" node --id "$n" \
    --listen "$(lab_host_ip "$n"):$LAB_PORT" --data-dir "$d/raft" \
    --plugin-socket "$d/plugins/raftipam.sock" --host "h$n" --docker-host "$d/docker.sock" \
    --cni-socket "$d/cni.sock" --cni-records "$d/cni-records" \
    --tls-dir "$LAB_DIR/tls/h$n" \
    </dev/null >>"$d/node.log" 2>&1 &
  echo $! >"$d/node.pid"
  disown $! 2>/dev/null # no "Killed" job notices when a script sourcing this kills it
  lab_wait 30 test -S "$d/plugins/raftipam.sock" ||
    lab_die "node $n did not start; its log:" || { tail -20 "$d/node.log" >&2; return 1; }
}

lab_start_containerd() { # N: a private mount namespace with hN/plugins over /run/docker/plugins
  local n=$1 d="$LAB_DIR/h$1"
  cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd"
state = "$d/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd-opt"
EOF
  echo '{}' >"$d/daemon.json"
  mkdir -p /run/docker/plugins
  # shellcheck disable=SC2016 # the inner script gets its values as $1 and $2
  unshare -m --propagation private -- bash -c '
    set -e
    mount --bind "$1/plugins" /run/docker/plugins
    nsenter --net="/run/netns/$2" -- containerd --config "$1/containerd.toml" </dev/null >>"$1/containerd.log" 2>&1 &
    echo $! >"$1/containerd.pid"
  ' lab-containerd "$d" "$(lab_ns "h$n")" || return 1
  lab_wait 30 test -S "$d/containerd.sock" ||
    lab_die "containerd on h$n did not start; its log:" || { tail -20 "$d/containerd.log" >&2; return 1; }
}

lab_start_dockerd() { # N: in the mount namespace of host N's containerd
  local n=$1 d="$LAB_DIR/h$1" cpid
  cpid=$(cat "$d/containerd.pid")
  [[ -e /proc/$cpid/ns/mnt ]] || lab_die "containerd of h$n is gone" || return 1
  rm -f "$d/docker.pid"
  nsenter --mount="/proc/$cpid/ns/mnt" --net="/run/netns/$(lab_ns "h$n")" -- \
    dockerd --data-root "$d/docker" --exec-root "$d/exec" --pidfile "$d/docker.pid" \
    -H "unix://$d/docker.sock" --containerd "$d/containerd.sock" --config-file "$d/daemon.json" \
    --iptables=false --ip6tables=false --bridge=none --cgroup-parent "$LAB_ID-h$n" \
    </dev/null >>"$d/dockerd.log" 2>&1 &
  echo $! >"$d/dockerd.pid"
  disown $! 2>/dev/null
}

lab_wait_dockerd() { # N
  local n=$1
  lab_wait 60 lab_docker "$n" info ||
    lab_die "dockerd on h$n did not answer; its log:" || { tail -20 "$LAB_DIR/h$n/dockerd.log" >&2; return 1; }
}

lab_import_image() {
  local root n
  root=$(mktemp -d "$LAB_DIR/rootfs.XXXX")
  mkdir -p "$root/bin"
  cp "$(command -v busybox)" "$root/bin/busybox"
  local a
  for a in sh sleep ip ping arping cat ls hostname ifconfig true; do ln -s busybox "$root/bin/$a"; done
  tar -C "$root" -cf "$LAB_DIR/rootfs.tar" .
  rm -rf "$root"
  for n in 1 2 3; do
    lab_docker "$n" import "$LAB_DIR/rootfs.tar" "$LAB_IMAGE" >/dev/null || lab_die "image import on h$n failed" || return 1
  done
}

lab_network() { # N [NAME]: the macvlan network on the LAN; raftipam IPAM in raftipam mode
  local n=$1 name=${2:-lan}
  local ipam=()
  [[ $LAB_MODE == raftipam ]] && ipam=(--ipam-driver raftipam)
  lab_docker "$n" network create -d macvlan -o parent=eth0 "${ipam[@]}" \
    --subnet "$(lab_subnet)" --gateway "$(lab_gateway)" \
    --aux-address "h1=$(lab_host_ip 1)" --aux-address "h2=$(lab_host_ip 2)" \
    --aux-address "h3=$(lab_host_ip 3)" --aux-address "legacy=$(lab_host_ip legacy)" \
    "$name"
}

lab_kill_host() { # N: kill -9 the node and dockerd (containerd and the containers stay)
  local n=$1 d="$LAB_DIR/h$1" p
  for p in node dockerd; do
    [[ -f $d/$p.pid ]] && kill -9 "$(cat "$d/$p.pid")" 2>/dev/null
  done
  local end=$((SECONDS + 10))
  while ((SECONDS < end)); do
    { [[ -f $d/node.pid ]] && kill -0 "$(cat "$d/node.pid")" 2>/dev/null; } ||
      { kill -0 "$(cat "$d/dockerd.pid")" 2>/dev/null; } || break
    sleep 0.2
  done
  return 0
}

lab_start_host() { # N
  local n=$1
  if [[ $LAB_MODE == raftipam ]]; then lab_start_node "$n" || return 1; fi
  lab_start_dockerd "$n" && lab_wait_dockerd "$n"
}

lab_cut() { ip -n "$(lab_ns lan)" link set "h$1" down; }
lab_heal() { ip -n "$(lab_ns lan)" link set "h$1" up; }

lab_arp() { # IP -> "RESPONDERS MAC[,MAC...]": ARP from the legacy host, 2 broadcast probes.
  # Docker derives a container's MAC from its IP, so two containers holding one address answer
  # with the same MAC: what counts is how many replies each probe gets.
  local out sent recv macs
  out=$(lab_in legacy timeout 10 busybox arping -b -c 2 -w 3 -I eth0 "$1" 2>/dev/null)
  sent=$(sed -n 's/^Sent \([0-9]*\) probe.*/\1/p' <<<"$out")
  recv=$(sed -n 's/^Received \([0-9]*\) response.*/\1/p' <<<"$out")
  macs=$(sed -n 's/.*reply from [0-9.]* \[\([0-9a-fA-F:]*\)\].*/\1/p' <<<"$out" | tr 'A-F' 'a-f' | sort -u | paste -sd, -)
  ((${sent:-0} > 0)) || sent=1
  echo "$(((${recv:-0} + sent - 1) / sent)) ${macs:--}"
}

# Every pid started by the lab: command lines naming DIR, processes in a lab netns, and all
# their descendants (the containers, children of their shims).
lab_pids() {
  local roots=() p ns
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$LAB_DIR/"; then roots+=("$p"); fi
  done
  for ns in lan h1 h2 h3 legacy; do
    ns=$(lab_ns "$ns")
    [[ -e /run/netns/$ns ]] && mapfile -t -O "${#roots[@]}" roots < <(ip netns pids "$ns" 2>/dev/null)
  done
  ((${#roots[@]})) || return 0
  # descendants: walk the ppid table
  ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" -v self="$$" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      changed = 1
      while (changed) {
        changed = 0
        for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
      }
      for (p in keep) if (p != self) print p
    }'
}

lab_down() { # DIR
  lab_load "$1" 2>/dev/null || { [[ -d $1 ]] && rm -rf "$1"; return 0; }
  local pids
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(lab_pids | grep -vx -e "$$" -e "$BASHPID" || true)
    [[ -z $pids ]] && break
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
    sleep 0.3
  done
  [[ -z $pids ]] || lab_log "WARNING: processes left after 10 passes: $pids"
  # dockerd's --cgroup-parent directories, deepest first
  local c
  for c in /sys/fs/cgroup/*/"$LAB_ID"-h[123] /sys/fs/cgroup/"$LAB_ID"-h[123]; do
    [[ -d $c ]] || continue
    find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  local h
  for h in h1 h2 h3 legacy lan; do
    [[ -e /run/netns/$(lab_ns "$h") ]] && ip netns del "$(lab_ns "$h")"
  done
  # Mounts live in the hosts' private mount namespaces, gone with their processes; in case
  # anything leaked into this one:
  grep -F " $LAB_DIR/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  rm -rf "$LAB_DIR"
  rm -f "$LAB_REGISTRY/$LAB_ID"
  lab_log "$LAB_ID down"
}

lab_sweep() { # tears down every registered lab whose owner process is gone
  local f owner dir id
  for f in "$LAB_REGISTRY"/rlab*; do
    [[ -f $f ]] || continue
    read -r owner dir <"$f"
    kill -0 "$owner" 2>/dev/null && continue
    id=${f##*/}
    lab_log "sweeping $id (owner $owner gone)"
    if [[ -f $dir/lab.env ]]; then
      (lab_down "$dir")
    else
      (
        LAB_ID=$id LAB_DIR=$dir
        for _ in 1 2 3; do
          pids=$(lab_pids)
          [[ -z $pids ]] && break
          # shellcheck disable=SC2086
          kill -9 $pids 2>/dev/null
          sleep 0.3
        done
        for h in h1 h2 h3 legacy lan; do ip netns del "$id-$h" 2>/dev/null; done
        rm -f "$f"
      )
    fi
  done
}

# Command-line use.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -uo pipefail
  cmd=${1:-}
  shift || true
  case $cmd in
  check) lab_check ;;
  up)
    lab_check || exit $?
    lab_up "$1" "$2" || {
      rc=$?
      lab_log "up failed; tearing down"
      [[ -f $1/lab.env ]] && lab_down "$1"
      exit $rc
    }
    ;;
  down) lab_down "$1" ;;
  sweep) lab_sweep ;;
  kill-host) lab_load "$1" && lab_kill_host "$2" ;;
  start-host) lab_load "$1" && lab_start_host "$2" ;;
  cut) lab_load "$1" && lab_cut "$2" ;;
  heal) lab_load "$1" && lab_heal "$2" ;;
  network) lab_load "$1" && lab_network "$2" "${3:-lan}" ;;
  docker)
    lab_load "$1" || exit 1
    n=$2
    shift 2
    lab_docker "$n" "$@"
    ;;
  raftipam)
    lab_load "$1" || exit 1
    n=$2
    shift 2
    lab_raftipam "$n" "$@"
    ;;
  legacy)
    lab_load "$1" || exit 1
    shift
    lab_in legacy "$@"
    ;;
  in)
    lab_load "$1" || exit 1
    h=$2
    shift 2
    lab_in "$h" "$@"
    ;;
  arp) lab_load "$1" && lab_arp "$2" ;;
  *)
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
  esac
fi
