#!/usr/bin/env bash
# The README's main command (until the cluster-set demo lands): set up, load the datapath into the
# cgroup v2 root, program one imported service, and send a real curl to its ClusterIP: the kernel hands
# the connection to the proxy address, where `ecnet bpf listen` reports the original destination.
# curl and the listener run in a network namespace of the demo's own, so nothing can leave the machine.
# Everything is removed at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
# A pin directory of the demo's own (ECNET_BPFFS stands for --bpffs): it never touches, or unloads,
# an ecnet already installed on this machine.
export ECNET_BPFFS=/sys/fs/bpf/ecnet-demo
ecnet() { node dist/cli/main.js "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
NS=ecnet-demo-$$
LISTENER=
cleanup() {
  [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ecnet bpf unload >/dev/null 2>&1 || true
}
trap cleanup EXIT
ecnet bpf status >/dev/null 2>&1 && { echo "demo: something is already loaded at $ECNET_BPFFS (a demo still running?)" >&2; trap - EXIT; exit 1; }

step "ecnet bpf load --proxy 127.0.0.1:15001"
ecnet bpf load --proxy 127.0.0.1:15001
step "ecnet bpf load --proxy 127.0.0.1:15001   (again: reuses the pins, attaches nothing twice)"
ecnet bpf load --proxy 127.0.0.1:15001
step "ecnet bpf service add 10.96.0.10:8080/tcp --id 1"
ecnet bpf service add 10.96.0.10:8080/tcp --id 1

step "ecnet bpf listen --proxy 127.0.0.1:15001   (in netns $NS, standing in for the node proxy)"
ip netns add "$NS"
ip -n "$NS" link set lo up
# nsenter, not `ip netns exec`: that remounts /sys for the namespace, hiding bpffs (and the pinned maps).
innet() { nsenter --net="/run/netns/$NS" "$@"; }
innet node dist/cli/main.js bpf listen --proxy 127.0.0.1:15001 --count 1 &
LISTENER=$!
for _ in $(seq 50); do innet ss -Hltn 'sport = :15001' | grep -q . && break; sleep 0.1; done

step "curl -s http://10.96.0.10:8080/   (same netns; it has no route to 10.96.0.0/16 at all)"
innet curl -s --max-time 5 http://10.96.0.10:8080/
wait "$LISTENER"
LISTENER=

step "ecnet bpf status"
ecnet bpf status
step "ecnet bpf dump ecnet_services"
ecnet bpf dump ecnet_services
step "bpftool map dump pinned $ECNET_BPFFS/maps/ecnet_services   (the same entry, raw: port is network order)"
bpftool map dump pinned "$ECNET_BPFFS/maps/ecnet_services"
step "ecnet bpf unload"
ecnet bpf unload
