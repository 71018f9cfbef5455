#!/usr/bin/env bash
# The README's main command (until the cluster-set demo lands): set up, load the datapath into the
# cgroup v2 root, program one imported service by hand, show what the kernel holds, then unload.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ecnet() { node dist/cli/main.js "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
trap 'ecnet bpf unload >/dev/null 2>&1 || true' EXIT

step "ecnet bpf load --proxy 127.0.0.1:15001"
ecnet bpf load --proxy 127.0.0.1:15001
step "ecnet bpf load --proxy 127.0.0.1:15001   (again: idempotent)"
ecnet bpf load --proxy 127.0.0.1:15001
step "ecnet bpf service add 10.96.0.10:8080/tcp --id 1"
ecnet bpf service add 10.96.0.10:8080/tcp --id 1
step "ecnet bpf status"
ecnet bpf status
step "ecnet bpf dump ecnet_services"
ecnet bpf dump ecnet_services
step "bpftool map dump pinned /sys/fs/bpf/ecnet/maps/ecnet_services"
bpftool map dump pinned /sys/fs/bpf/ecnet/maps/ecnet_services
step "ecnet bpf unload"
ecnet bpf unload
trap - EXIT
