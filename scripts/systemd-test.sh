#!/usr/bin/env bash
# Exercises packaging/systemd/raftipam-node.service and raftipam-shim.service under a real
# systemd: boots systemd as PID 1 of a container (systemd-nspawn --boot, private network, so
# only its own loopback) on a throw-away overlay of this machine's / (writes go to a tmpfs), with
# the binary at /usr/bin/raftipam (or the Debian package) and packaging/raftipam.toml, addresses moved to
# 127.0.0.1, at /etc/raftipam/raftipam.toml. Checks: start, the node answering, listeners on
# loopback only, data under /var/lib/raftipam, the plugin socket, a clean stop on SIGTERM within
# TimeoutStopSec, data kept across a restart, Restart=on-failure, the order against
# docker.service, the shim serving the plugin socket, and a bad config file failing the unit
# at once (exit status 2, RestartPreventExitStatus) instead of a restart loop. Where this
# machine has Debian's docker.io, containerd and busybox-static, the container's systemd then
# starts its own containerd and dockerd (own empty state, vfs storage, no iptables) while only
# raftipam-node.socket is enabled: `docker network create --ipam-driver raftipam` is the call
# that starts the node, `docker run` gets an address of the pool's range on its eth0, held by
# this host, and `docker rm` + `docker network rm` give the address and the pool back. The
# container's /run is its own: this machine's docker.sock is never visible there.
#
#   sudo bash scripts/systemd-test.sh [PATH/TO/raftipam [PATH/TO/raftipam.deb]]
#        (defaults: $RAFTIPAM_BIN, $RAFTIPAM_DEB)
#
# With a .deb (scripts/package.sh), the package is installed in the container with dpkg instead
# of copying the binary and the units: checks that it installs the binary, units, conffile,
# manual pages, completions and state directory, and enables and starts nothing; the units are
# then tested from the package; finally `dpkg -r` stops what runs and removes it (keeping the
# config and the data) and `dpkg -P` removes the config. Either way, socket activation
# (raftipam-node.socket) is tested: the socket exists while the service is not running, and
# the first call starts the service and is answered.
#
# Prints PASS:/FAIL: lines; exit status 1 if any check failed. Exits 0 with a "SKIP:" line only
# when systemd cannot boot in a container here (the line says why). Takes ~15 s.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

bin=${1:-$RAFTIPAM_BIN}
deb=${2:-${RAFTIPAM_DEB:-}}
machine=raftipam-sdt-$$
port=7379 # inside the container's own network namespace
budget=600 # the container is powered off after this many seconds whatever happens
cfg=/etc/raftipam/raftipam.toml
started=$SECONDS
fails=0
checks=0
work="" root="" ts_pid="" leader=""

pass() { checks=$((checks + 1)); printf 'PASS: %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf 'FAIL: %s\n' "$*"; }
check() { # check WHAT COMMAND...: one PASS or FAIL line
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
skip() { printf 'SKIP: %s\n' "$*"; exit 0; }

if [[ $(id -u) -ne 0 ]]; then echo "FAIL: run as root (systemd-nspawn and mounts need it)"; exit 1; fi
if [[ ! -x $bin ]]; then echo "FAIL: no raftipam binary at '$bin' (usage: $0 PATH/TO/raftipam [PATH/TO/raftipam.deb])"; exit 1; fi
if [[ -n $deb && ! -f $deb ]]; then echo "FAIL: no package at '$deb' (scripts/package.sh builds it)"; exit 1; fi
if ! apt_need systemd:/lib/systemd/systemd systemd-container:systemd-nspawn util-linux:nsenter \
  curl:curl iproute2:ss; then
  echo "FAIL: could not install systemd, systemd-container, curl and iproute2"
  exit 1
fi

cleanup() {
  set +e
  if [[ -n $ts_pid ]] && kill -0 "$ts_pid" 2>/dev/null; then
    kill -TERM "$ts_pid" # timeout passes it on to systemd-nspawn: the container powers off
    for _ in $(seq 1 60); do kill -0 "$ts_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$ts_pid" 2>/dev/null; then
      log "the container did not power off within 30 s: killing it"
      [[ -n $leader ]] && kill -KILL "$leader" # PID 1 of its PID namespace: takes all with it
      pkill -KILL -P "$ts_pid"
      kill -KILL "$ts_pid"
    fi
    wait "$ts_pid" 2>/dev/null
  fi
  if [[ -n $work ]]; then
    mountpoint -q "$root" && { umount "$root" || umount -l "$root"; }
    mountpoint -q "$work/layer" && { umount "$work/layer" || umount -l "$work/layer"; }
    if mountpoint -q "$root" || mountpoint -q "$work/layer"; then
      log "WARNING: could not unmount $root or $work/layer; left $work"
    else
      rm -rf "$work"
    fi
  fi
  rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null
  # The container's dockerd's cgroups (cgroup v1: in this machine's hierarchies), if any are left.
  find /sys/fs/cgroup/*/"$machine" -depth -type d -exec rmdir {} + 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The container's root: / read-only below, a tmpfs on top, so nothing of this machine changes.
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
  skip "the kernel has no overlayfs (needed for a throw-away copy of / to boot)"
work=$(mktemp -d /tmp/raftipam-systemd.XXXXXX)
root=$work/root
mkdir -p "$work/layer" "$root"
if ! err=$(mount -t tmpfs -o size=1g,mode=0755 raftipam-sdt "$work/layer" 2>&1); then
  skip "cannot mount a tmpfs: $err"
fi
mkdir -p "$work/layer/upper" "$work/layer/work"
if ! err=$(mount -t overlay raftipam-sdt \
  -o "lowerdir=/,upperdir=$work/layer/upper,workdir=$work/layer/work" "$root" 2>&1); then
  skip "cannot mount an overlay of /: $err"
fi

rm -rf "$root/etc/raftipam" "$root/var/lib/raftipam" "$root/usr/bin/raftipam"
if [[ -n $deb ]]; then
  cp "$deb" "$root/var/tmp/raftipam.deb" # installed with dpkg once systemd runs (its /tmp is a tmpfs)
else
  install -m 0755 "$bin" "$root/usr/bin/raftipam"
  install -m 0644 packaging/systemd/raftipam-node.service packaging/systemd/raftipam-shim.service \
    packaging/systemd/raftipam-node.socket packaging/systemd/raftipam-shim.socket \
    "$root/etc/systemd/system/"
fi
# The example config with this host's addresses on loopback, one endpoint (this node), plain
# TCP (loopback needs no certificates).
sed -e "s/10\.0\.0\.1:/127.0.0.1:/g" -e "s/^endpoints = .*/endpoints = [\"127.0.0.1:$port\"]/" \
  -e "/^tls-dir *=/d" \
  packaging/raftipam.toml >"$work/node-plugin.toml"
# The same without the node's plugin (plugin-socket and the options that need it, which the node
# refuses without it): the shim serves the socket instead.
sed -e '/^\[node\]/,/^\[/{/^\(plugin-socket\|host\|docker-host\|reconcile-[a-z]*\|heartbeat-interval\|cni-[a-z]*\) *=/d}' \
  "$work/node-plugin.toml" >"$work/node-only.toml"
if grep -v '^[[:space:]]*#' "$work/node-plugin.toml" | grep -Eo '"[0-9.]+:[0-9]+"' | grep -vq '^"127\.0\.0\.1:'; then
  echo "FAIL: packaging/raftipam.toml has addresses this script does not move to loopback:"
  grep -v '^[[:space:]]*#' "$work/node-plugin.toml" | grep -E '"[0-9.]+:[0-9]+"'
  exit 1
fi
if [[ -z $deb ]]; then
  mkdir -p "$root/etc/raftipam"
  install -m 0644 "$work/node-plugin.toml" "$root$cfg"
fi
# Docker's daemons, if this machine has them, start in the container only when the test says
# so, with their own empty state (not this machine's, which the overlay shows), the vfs storage
# driver (no overlay on an overlay) and no iptables.
mkdir -p "$root/etc/docker" "$root/etc/containerd"
# (On cgroup v1 a cgroup parent of this run's is added once the container is up; see below.)
printf '{"data-root": "/var/lib/docker-sdt", "storage-driver": "vfs", "iptables": false, "ip-masq": false, "bridge": "none"}\n' \
  >"$root/etc/docker/daemon.json"
printf 'version = 2\nroot = "/var/lib/containerd-sdt"\nstate = "/run/containerd"\n' \
  >"$root/etc/containerd/config.toml"
# Only what the test needs starts at boot: this machine's own services (dockerd, containerd,
# databases, timers) stay off in the container.
for u in "$root"/etc/systemd/system/{multi-user,sockets,timers,default,graphical}.target.wants/*; do
  [[ -e $u || -L $u ]] || continue
  case ${u##*/} in
    systemd-* | dbus* | getty* | console-getty*) ;;
    *) rm -f "$u" ;;
  esac
done

# Boot. On a machine whose PID 1 is systemd, nspawn asks it for a scope; otherwise (a VM's own
# init, a CI container) it stays in the cgroup it was started in.
nspawn_opts=(--quiet --boot --directory="$root" --machine="$machine" --private-network
  --register=no --link-journal=no --console=read-only
  --system-call-filter=@keyring) # runc gives each container a session keyring
[[ $(ps -o comm= -p 1) == systemd ]] || nspawn_opts+=(--keep-unit)
log "booting systemd in a container (systemd-nspawn ${nspawn_opts[*]})"
timeout -k 10 "$budget" systemd-nspawn "${nspawn_opts[@]}" >"$work/console.log" 2>&1 &
ts_pid=$!

in_ct() { # in_ct COMMAND...: run in the container (its namespaces, a clean environment)
  timeout "${CT_TIMEOUT:-40}" nsenter --target "$leader" --mount --uts --ipc --net --pid --cgroup -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
cli() { in_ct raftipam --config "$cfg" --timeout 5s "$@"; }
find_leader() {
  local ns
  ns=$(pgrep -P "$ts_pid" -x systemd-nspawn | head -1) || return 1
  leader=$(pgrep -P "$ns" -x systemd | head -1) || return 1
  [[ -n $leader ]]
}
wait_until() { # wait_until SECONDS COMMAND...: true once COMMAND succeeds, false at the deadline
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.5
  done
}

state=""
end=$((SECONDS + 120))
while ((SECONDS < end)); do
  kill -0 "$ts_pid" 2>/dev/null || break
  [[ -n $leader ]] || find_leader || true
  if [[ -n $leader ]]; then
    state=$(CT_TIMEOUT=5 in_ct systemctl is-system-running 2>/dev/null) || true
    [[ $state == running || $state == degraded ]] && break
  fi
  sleep 0.5
done
if [[ $state != running && $state != degraded ]]; then
  reason="systemd-nspawn exited"
  kill -0 "$ts_pid" 2>/dev/null && reason="the container's systemd did not finish booting in 120 s (state '${state:-unknown}')"
  log "systemd-nspawn's output:"
  sed 's/\x1b\[[0-9;]*m//g' "$work/console.log" | tail -25 | sed 's/^/    /' >&2
  skip "no systemd can boot in a container here: $reason; its last words: $(sed 's/\x1b\[[0-9;]*m//g' "$work/console.log" | grep -v '^$' | tail -3 | tr '\n' ' ')"
fi
cgroups="v1 (legacy)"
if [[ $(in_ct stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then cgroups="v2 (unified)"
elif in_ct test -e /sys/fs/cgroup/unified/cgroup.procs; then cgroups="hybrid (v1 + v2 at /sys/fs/cgroup/unified)"; fi
pass "systemd $(in_ct systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') booted as PID 1 of a container in $((SECONDS - started)) s (state $state, cgroups $cgroups)"
if [[ $state == degraded ]]; then
  log "failed units in the container (not ours):"
  in_ct systemctl --failed --no-legend --plain | sed 's/^/    /' >&2 || true
fi
if in_ct test -e /run/docker.sock; then
  echo "FAIL: a docker.sock is visible in the container; stopping before anything talks to it"
  exit 1
fi

active() { [[ $(in_ct systemctl is-active "$1") == active ]]; }
inactive() { [[ $(in_ct systemctl is-active "$1") == inactive ]]; }

# --- the Debian package
if [[ -n $deb ]]; then
  check "dpkg -i raftipam.deb ($(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version))" \
    in_ct sh -c 'DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/raftipam.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }'
  check "the package installed the binary, 4 units, the conffile, manual pages, completions" \
    in_ct sh -c 'set -e
      test -x /usr/bin/raftipam
      for u in raftipam-node.service raftipam-shim.service raftipam-node.socket raftipam-shim.socket; do
        test -f /lib/systemd/system/$u; done
      test -f /etc/raftipam/raftipam.toml
      dpkg-query -W -f="\${Conffiles}" raftipam | grep -q /etc/raftipam/raftipam.toml
      test -f /usr/share/man/man1/raftipam.1.gz -a -f /usr/share/man/man1/raftipam-pool-create.1.gz
      test -f /usr/share/bash-completion/completions/raftipam
      test -f /usr/share/zsh/vendor-completions/_raftipam
      test -f /usr/share/fish/vendor_completions.d/raftipam.fish'
  check "the CNI plugin /usr/lib/cni/raftipam is the binary, and answers a runtime'\''s VERSION" \
    in_ct sh -c 'set -e
      test "$(readlink /usr/lib/cni/raftipam)" = /usr/bin/raftipam
      echo "{\"cniVersion\":\"1.0.0\"}" | CNI_COMMAND=VERSION /usr/lib/cni/raftipam | grep -q "\"supportedVersions\""'
  check "the shipped config is packaging/raftipam.toml" \
    cmp -s packaging/raftipam.toml "$root/etc/raftipam/raftipam.toml"
  check "the state directory /var/lib/raftipam exists, mode 0700" \
    eval '[[ $(in_ct stat -c %a /var/lib/raftipam) == 700 ]]'
  enabled_none() {
    local u s
    for u in raftipam-node.service raftipam-shim.service raftipam-node.socket raftipam-shim.socket; do
      s=$(in_ct systemctl is-enabled "$u" 2>/dev/null) || true
      echo "    $u: ${s:-?}, $(in_ct systemctl is-active "$u" 2>/dev/null || true)"
      [[ $s == disabled ]] && inactive "$u" || return 1
    done
    ! in_ct pgrep -x raftipam >/dev/null
  }
  check "the package enabled and started nothing" enabled_none
  install -m 0644 "$work/node-plugin.toml" "$root$cfg"
fi
answers() { cli --json cluster status | grep -q '"id": 1'; }
only_loopback() {
  local l
  l=$(in_ct ss -Hltnp) || return 1
  printf '%s\n' "$l" | grep raftipam | awk '{print "    listening on " $4}'
  printf '%s\n' "$l" | grep -q raftipam && ! printf '%s\n' "$l" | grep raftipam | awk '{print $4}' | grep -vq '^127\.0\.0\.1:'
}
state_dir() {
  local mode
  mode=$(in_ct stat -c %a /var/lib/raftipam) || return 1
  echo "    /var/lib/raftipam mode $mode: $(in_ct ls /var/lib/raftipam/node | tr '\n' ' ')"
  [[ $mode == 700 ]] && [[ -n $(in_ct ls -A /var/lib/raftipam/node) ]]
}
plugin_answers() {
  local r
  r=$(in_ct curl -sS --max-time 5 --unix-socket /run/docker/plugins/raftipam.sock \
    -X POST -d '{}' http://localhost/Plugin.Activate) || return 1
  echo "    Plugin.Activate: $r"
  [[ $r == *IpamDriver* ]]
}
usec() { # "1min 30s" / "30s" / "500ms" -> microseconds
  local t=0 w
  for w in $1; do
    case $w in
      *min) t=$((t + ${w%min} * 60000000)) ;;
      *ms) t=$((t + ${w%ms} * 1000)) ;;
      *s) t=$((t + ${w%s} * 1000000)) ;;
      *) return 1 ;;
    esac
  done
  echo "$t"
}
stop_clean() { # stop_clean UNIT: stopped by SIGTERM, exited by itself with 0, within TimeoutStopSec
  local unit=$1 t0 us limit props
  limit=$(in_ct systemctl show -P TimeoutStopUSec "$unit") || return 1
  t0=$(date +%s%N)
  in_ct systemctl stop "$unit" || return 1
  us=$((($(date +%s%N) - t0) / 1000))
  props=$(in_ct systemctl show -p ActiveState -p Result -p ExecMainCode -p ExecMainStatus "$unit" |
    sort | tr '\n' ' ')
  echo "    $unit stopped in $((us / 1000)) ms (TimeoutStopSec $limit): $props"
  [[ $props == "ActiveState=inactive ExecMainCode=1 ExecMainStatus=0 Result=success " ]] &&
    ((us < $(usec "$limit")))
}
restarted() { # the node came back after a crash: active, one restart, another PID, answering
  [[ $(in_ct systemctl show -P NRestarts raftipam-node) == 1 ]] && active raftipam-node &&
    [[ $(in_ct systemctl show -P MainPID raftipam-node) != "$1" ]] && answers
}
powered_off() { ! kill -0 "$ts_pid" 2>/dev/null; }
failed_with_2() { # the node exited 2 (a usage/config error) and systemd gave up on it at once
  local props
  props=$(in_ct systemctl show -p ActiveState -p ExecMainStatus -p NRestarts raftipam-node |
    sort | tr '\n' ' ')
  echo "    raftipam-node: $props"
  [[ $props == "ActiveState=failed ExecMainStatus=2 NRestarts=0 " ]]
}
not_restarted() { # failed with 2, and still so after more than RestartSec
  wait_until 15 failed_with_2 && sleep 3 && failed_with_2
}
has_dep() { # has_dep LIST WORD
  [[ " $1 " == *" $2 "* ]]
}

# --- raftipam-node, serving the plugin too (the config as packaging/raftipam.toml has it)
check "systemctl daemon-reload && systemctl enable --now raftipam-node" \
  in_ct sh -c 'systemctl daemon-reload && systemctl enable --now raftipam-node'
check "raftipam-node is enabled for multi-user.target and docker.service" \
  in_ct test -L /etc/systemd/system/multi-user.target.wants/raftipam-node.service -a \
  -L /etc/systemd/system/docker.service.wants/raftipam-node.service
check "raftipam-node is active and answers on 127.0.0.1:$port" \
  wait_until 20 eval 'active raftipam-node && answers'
check "raftipam listens on 127.0.0.1 only" only_loopback
check "the data dir is under /var/lib/raftipam (StateDirectory, mode 0700)" state_dir
check "the node serves Docker's plugin socket /run/docker/plugins/raftipam.sock" \
  wait_until 10 plugin_answers
check "cluster init; pool create; addr alloc" in_ct sh -c "
  set -e
  raftipam --config $cfg cluster init
  raftipam --config $cfg pool create 192.168.10.0/24 --range 192.168.10.128/25
  raftipam --config $cfg --json addr alloc 192.168.10.0/24 --owner systemd-test/one >/tmp/alloc.json"
addr=$(in_ct sed -n 's/.*"address": "\([0-9.]*\)\/.*/\1/p' /tmp/alloc.json || true)
echo "    allocated ${addr:-nothing}"
check "systemctl stop raftipam-node: clean exit on SIGTERM within TimeoutStopSec" stop_clean raftipam-node
check "systemctl start raftipam-node" in_ct systemctl start raftipam-node
check "the data is kept across the restart (who-has ${addr:-?} finds systemd-test/one)" \
  wait_until 20 eval "active raftipam-node && cli addr who-has '$addr' | grep -q systemd-test/one"
pid=$(in_ct systemctl show -P MainPID raftipam-node) || true
[[ $pid =~ ^[0-9]+$ && $pid -gt 1 ]] && { in_ct kill -KILL "$pid" || true; }
check "Restart=on-failure: killed with SIGKILL, back within RestartSec and answering" \
  wait_until 20 restarted "$pid"

# --- the order against docker.service
before=$(in_ct systemctl show -P Before raftipam-node) || true
echo "    raftipam-node Before=$before"
check "raftipam-node is ordered Before=docker.service" has_dep "$before" docker.service
if [[ $(in_ct systemctl show -P LoadState docker.service) == loaded ]]; then
  after=$(in_ct systemctl list-dependencies --after --plain --no-legend docker.service | awk '{print $1}' | tr '\n' ' ')
  check "systemctl list-dependencies --after docker.service lists raftipam-node" \
    has_dep "$after" raftipam-node.service
  check "docker.service Wants= raftipam-node (WantedBy=docker.service)" \
    has_dep "$(in_ct systemctl show -P Wants docker.service)" raftipam-node.service
else
  echo "NOTE: no docker.service unit here (Debian's docker.io is not installed); only Before= checked"
fi

# --- raftipam-shim serving the plugin, against the node (which no longer serves it)
install -m 0644 "$work/node-only.toml" "$root$cfg"
check "systemctl restart raftipam-node (now without the plugin socket)" in_ct systemctl restart raftipam-node
check "the node answers again" wait_until 20 answers
# Enabled, as a host would have it (an inactive unit nothing refers to is unloaded at once, and
# with it the exit status stop_clean reads).
check "systemctl enable --now raftipam-shim" in_ct systemctl enable --now raftipam-shim
check "raftipam-shim is active and serves /run/docker/plugins/raftipam.sock" \
  wait_until 20 eval 'active raftipam-shim && plugin_answers'
hn=$(in_ct hostname) || true
check "the shim's heartbeat reached the cluster (raftipam host ls lists '$hn')" \
  wait_until 20 eval "cli host ls | grep -q '^$hn '"
check "systemctl stop raftipam-shim: clean exit on SIGTERM within TimeoutStopSec" stop_clean raftipam-shim
check "systemctl stop raftipam-node: clean exit on SIGTERM within TimeoutStopSec" stop_clean raftipam-node

# --- socket activation: raftipam-node.socket holds the plugin socket; a call starts the node
install -m 0644 "$work/node-plugin.toml" "$root$cfg"
check "systemctl disable raftipam-shim; systemctl enable --now raftipam-node.socket" \
  in_ct sh -c 'systemctl disable --quiet raftipam-shim && systemctl enable --now raftipam-node.socket'
socket_waits() {
  active raftipam-node.socket && inactive raftipam-node.service &&
    in_ct test -S /run/docker/plugins/raftipam.sock
}
check "the plugin socket exists (raftipam-node.socket) while raftipam-node is not running" socket_waits
activated() { # a call on the socket starts the node (it waits in the backlog) and is answered
  local r
  r=$(in_ct curl -sS --max-time 30 --unix-socket /run/docker/plugins/raftipam.sock \
    -X POST -d '{"AddressSpace":"local","Pool":"10.77.0.0/24"}' http://localhost/IpamDriver.RequestPool) || return 1
  echo "    IpamDriver.RequestPool through the activated socket: $r"
  [[ $r == *'"PoolID":"local/10.77.0.0/24"'* ]] && active raftipam-node
}
check "the first call starts raftipam-node through the socket and gets its pool" activated
stop_keeps_socket() {
  stop_clean raftipam-node && active raftipam-node.socket &&
    in_ct test -S /run/docker/plugins/raftipam.sock
}
check "systemctl stop raftipam-node: clean exit, the socket stays for the next call" stop_keeps_socket

# --- Docker in the container: this machine's dockerd (Debian's docker.io) started by the
# container's systemd while raftipam-node is not running, only its socket; `docker network
# create` is then the call that starts the node, and a container gets its address from it.
if [[ -x $root/usr/sbin/dockerd && -x $root/usr/bin/containerd && -x $root/bin/busybox ]] &&
  [[ $(in_ct systemctl show -P LoadState docker.service) == loaded ]]; then
  docker_ct() { CT_TIMEOUT=${CT_TIMEOUT:-90} in_ct docker "$@"; }
  docker_up() { docker_ct info >/dev/null 2>&1; }
  # On cgroup v1 nspawn mounts the controllers' hierarchies read-only in the container (only
  # its systemd's own hierarchy is delegated), so runc could create no cgroup there: they are
  # made writable in the container's mount namespace only, and dockerd keeps its cgroups under
  # one parent of this run's (removed at exit). On cgroup v2 the container's subtree is its own.
  if [[ $cgroups != "v2 (unified)" ]]; then
    while read -r m opts; do
      [[ $opts == ro,* || $opts == ro ]] || continue
      nsenter --target "$leader" --mount -- mount -o remount,bind,rw "$m" ||
        echo "NOTE: could not make $m writable in the container"
    done < <(in_ct findmnt -rn -t cgroup -o TARGET,OPTIONS)
    # The cgroupfs driver (dockerd's default on v1) under a parent of this run's.
    printf '{"data-root": "/var/lib/docker-sdt", "storage-driver": "vfs", "iptables": false, "ip-masq": false, "bridge": "none", "cgroup-parent": "/%s"}\n' "$machine" \
      >"$root/etc/docker/daemon.json"
  fi
  # raftipam-node.service is not wanted by docker.service here: only its socket is enabled.
  # Whether dockerd can run in a container at all is this machine's business (its kernel,
  # cgroups, seccomp): if it cannot start, the Docker part is skipped with a NOTE saying why.
  in_ct systemctl disable --quiet raftipam-node.service || true
  if ! { in_ct systemctl start containerd.service docker.service && wait_until 60 docker_up; }; then
    words=$(in_ct journalctl --no-pager -u docker -u containerd -n 5 -o cat 2>/dev/null | tr '\n' ' ')
    in_ct systemctl stop docker.service docker.socket containerd.service || true
    # Only what the kernel or the container forbids is skipped; anything else is a failure.
    if grep -Eqi 'operation not permitted|permission denied|read-only file system|not supported|no such device|cgroup' <<<"$words"; then
      echo "NOTE: dockerd cannot run in a container here, Docker under systemd skipped; its last words: $words"
    else
      fail "systemctl start containerd docker: dockerd did not come up in the container: $words"
    fi
  else
  check "systemctl start containerd docker (raftipam-node disabled and stopped, only its socket enabled)" \
    eval 'inactive raftipam-node && active raftipam-node.socket'
  echo "    dockerd $(docker_ct version --format '{{.Server.Version}}' 2>/dev/null || echo '?') in the container," \
    "storage $(docker_ct info --format '{{.Driver}}' 2>/dev/null || echo '?')"
  check "the raftipam-busybox image imported from /bin/busybox" in_ct sh -c 'set -e
    d=$(mktemp -d); mkdir "$d/bin"; cp /bin/busybox "$d/bin/"
    for a in sh sleep ip cat; do ln -s busybox "$d/bin/$a"; done
    tar -C "$d" -c . | docker import - raftipam-busybox >/dev/null'
  netcreate() {
    local out
    out=$(docker_ct network create --ipam-driver raftipam --subnet 192.168.30.0/24 \
      --ip-range 192.168.30.64/26 sdt-net 2>&1) || { echo "    $out"; return 1; }
    active raftipam-node && cli pool ls | grep -q '192\.168\.30\.0/24'
  }
  check "docker network create --ipam-driver raftipam: dockerd's call started the node, the pool is in the cluster" netcreate
  ct_addr=""
  runs() {
    local out
    if ! out=$(docker_ct run -d --name sdt-c1 --network sdt-net raftipam-busybox sleep 600 2>&1); then
      echo "    $out"
      return 1
    fi
    ct_addr=$(docker_ct inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' sdt-c1) ||
      return 1
    echo "    the container's address: ${ct_addr:-none}"
    [[ $ct_addr == 192.168.30.* ]] && (( ${ct_addr##*.} >= 64 && ${ct_addr##*.} < 128 )) &&
      docker_ct exec sdt-c1 ip -4 addr show eth0 | grep -q "inet $ct_addr/24"
  }
  if runs >"$work/run.out" 2>&1; then
    cat "$work/run.out"
    pass "docker run --network sdt-net: the container has an address of the range, on its eth0"
  elif grep -q "OCI runtime create failed" "$work/run.out" &&
    grep -Eqi 'cgroup|not permitted|permission denied|read-only file system|keyring' "$work/run.out"; then
    # runc, not raftipam: the address was given; the container could not be started here.
    echo "NOTE: runc cannot start a container inside this container here (the network through the plugin worked): $(grep -m1 'OCI runtime' "$work/run.out")"
    docker_ct rm -f sdt-c1 >/dev/null 2>&1 || true
    ct_addr=""
  else
    cat "$work/run.out"
    fail "docker run --network sdt-net: the container has an address of the range, on its eth0"
  fi
  host_name=$(sed -n 's/^host *= *"\([^"]*\)".*/\1/p' "$work/node-plugin.toml" | head -1)
  held() { # Docker 20.10 names no endpoint in its calls: the owner is this host's, endpoint "-"
    local w
    w=$(cli addr who-has "$ct_addr") || return 1
    echo "    raftipam addr who-has $ct_addr: $w"
    [[ -n $host_name && $w == *"allocated to $host_name/"* ]]
  }
  if [[ -n $ct_addr ]]; then
    check "raftipam addr who-has: the container's address is held by this host ('$host_name')" held
  fi
  removed() {
    local pools
    docker_ct rm -f sdt-c1 >/dev/null && docker_ct network rm sdt-net >/dev/null || return 1
    pools=$(cli pool ls) || return 1
    echo "    raftipam pool ls after docker network rm: $(printf '%s' "$pools" | tr '\n' ' ')"
    ! printf '%s' "$pools" | grep -q '192\.168\.30\.0/24'
  }
  check "docker rm and docker network rm: the address and the pool are given back" removed
  check "systemctl stop docker containerd" \
    in_ct systemctl stop docker.service docker.socket containerd.service
  # dockerd's call started the node: stop it, so that the next check starts it again.
  check "systemctl stop raftipam-node: clean exit, the socket stays for the next call" stop_keeps_socket
  fi
else
  echo "NOTE: no Docker in the container (this machine has no docker.io, containerd or busybox-static): skipped dockerd under systemd"
fi
check "the next call starts it again" activated
check "systemctl disable --now raftipam-node.socket raftipam-node: the socket file goes" \
  in_ct sh -c 'systemctl disable --quiet --now raftipam-node.socket raftipam-node && ! test -e /run/docker/plugins/raftipam.sock'

# --- a configuration error: exit status 2, no restart loop (RestartPreventExitStatus=2)
printf '[node]\nbogus = 1\n' >"$root$cfg"
in_ct systemctl start raftipam-node || true
check "a bad config file: raftipam-node fails with status 2 and is not restarted" not_restarted

# --- removing the package: what runs stops; dpkg -r keeps the config and the data, -P the data
if [[ -n $deb ]]; then
  install -m 0644 "$work/node-plugin.toml" "$root$cfg"
  in_ct systemctl reset-failed raftipam-node || true
  check "raftipam-node runs again before the removal" \
    eval 'in_ct systemctl start raftipam-node && wait_until 20 answers'
  check "dpkg -r raftipam: the node stopped, binary, units and CNI link gone, config and data kept" \
    in_ct sh -c 'set -e
      dpkg -r raftipam >/tmp/dpkg-r.log 2>&1 || { cat /tmp/dpkg-r.log; exit 1; }
      ! pgrep -x raftipam
      test ! -e /usr/bin/raftipam -a ! -e /lib/systemd/system/raftipam-node.service
      test ! -e /usr/lib/cni/raftipam -a ! -L /usr/lib/cni/raftipam
      test -f /etc/raftipam/raftipam.toml -a -d /var/lib/raftipam/node'
  check "dpkg -P raftipam: the config gone, the node's data kept (it holds the cluster's addresses)" \
    in_ct sh -c 'set -e
      dpkg -P raftipam >/tmp/dpkg-p.log 2>&1 || { cat /tmp/dpkg-p.log; exit 1; }
      test ! -e /etc/raftipam/raftipam.toml -a -d /var/lib/raftipam/node
      ! dpkg-query -W raftipam 2>/dev/null | grep -q .'
fi

if ((fails)); then
  log "the units' journal in the container:"
  in_ct journalctl --no-pager -o short-monotonic -u raftipam-node -u raftipam-shim | tail -40 >&2 || true
fi

# --- power off
kill -TERM "$ts_pid"
check "the container powers off (systemd in it halts) within 30 s" \
  wait_until 30 powered_off
wait "$ts_pid" 2>/dev/null || true

if ((fails)); then
  echo "FAIL: $fails of $checks checks failed ($((SECONDS - started)) s)"
  exit 1
fi
echo "PASS: all $checks checks passed ($((SECONDS - started)) s)"
