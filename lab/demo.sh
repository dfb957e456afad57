#!/usr/bin/env bash
# The duplicate-address problem and its fix, on one machine (as root): the netns lab of
# lab/lab.sh — three Docker hosts and a legacy host on one bridge LAN (10.231.0.0/24) — run
# twice: first with Docker's default IPAM, then with raftipam. Each time every host creates the
# same macvlan network (gateway and all host addresses as --aux-address) and starts two
# containers; the legacy host then sends ARP probes for each container's address. Prints, side
# by side, which host's container got which address and how many ARP responders each address
# has, then tears the lab down (also on Ctrl-C or an error).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
source scripts/lib.sh
source lab/lab.sh

lab_check || exit $?
if [[ ! -x $RAFTIPAM_BIN ]]; then
  log "building raftipam (release) into $CARGO_TARGET_DIR"
  cargo build --release -p raftipam --bin raftipam >&2 || exit 1
fi
export RAFTIPAM_BIN
export LAB_OWNER_PID=$$ # a lab this script leaves (killed with SIGKILL) is swept by the next
lab_sweep

work=$(mktemp -d /tmp/rlab-demo.XXXXXX)
current=
cleanup() {
  [[ -n $current && -d $current ]] && lab_down "$current"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_mode MODE: brings a lab up in MODE, starts 2 containers per host, writes
# "HOST/CONTAINER ADDRESS RESPONDERS" lines to $work/MODE, tears the lab down.
run_mode() {
  local mode=$1 n r name addr
  current=$work/$mode
  log "lab with $mode IPAM"
  lab_up "$current" "$mode" || return 1
  for n in 1 2 3; do lab_network "$n" lan >/dev/null || return 1; done
  for r in 1 2; do
    for n in 1 2 3; do
      name=c$r
      lab_docker "$n" run -d --name "h$n-$name" --network lan "$LAB_IMAGE" sleep 1d >/dev/null || return 1
    done
  done
  : >"$work/$mode.txt"
  for r in 1 2; do
    for n in 1 2 3; do
      addr=$(lab_docker "$n" inspect -f '{{.NetworkSettings.Networks.lan.IPAddress}}' "h$n-c$r")
      echo "h$n/c$r $addr $(lab_arp "$addr" | cut -d' ' -f1)" >>"$work/$mode.txt"
    done
  done
  lab_down "$current"
  current=
}

run_mode default || exit 1
run_mode raftipam || exit 1

summary() { # MODE
  local total distinct multi
  total=$(wc -l <"$work/$1.txt")
  distinct=$(awk '{print $2}' "$work/$1.txt" | sort -u | wc -l)
  multi=$(awk '$3 > 1 {print $2}' "$work/$1.txt" | sort -u | wc -l)
  echo "$total containers, $distinct distinct addresses, $multi answered by more than one host"
}

echo
echo "LAN 10.231.0.0/24: gateway .1, Docker hosts h1 .11, h2 .12, h3 .13, legacy host .20"
echo "ARP: replies per broadcast probe from the legacy host (1 = one container owns the address)"
echo
printf '%-10s | %-15s %-4s | %-15s %-4s\n' "container" "Docker default" "ARP" "raftipam" "ARP"
printf '%-10s-+-%-15s-%-4s-+-%-15s-%-4s\n' ---------- --------------- ---- --------------- ----
paste -d' ' "$work/default.txt" "$work/raftipam.txt" | while read -r c a1 r1 _ a2 r2; do
  printf '%-10s | %-15s %-4s | %-15s %-4s\n' "$c" "$a1" "$r1" "$a2" "$r2"
done
echo
echo "Docker default IPAM: $(summary default)"
echo "raftipam:            $(summary raftipam)"
