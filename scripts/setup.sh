#!/usr/bin/env bash
# Installs what ecnet needs on a Debian/Ubuntu machine (run as root), then builds everything.
# Idempotent: packages already present are not reinstalled. Called by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "setup: run as root (apt-get, and the datapath needs CAP_BPF/CAP_SYS_ADMIN)" >&2; exit 1; }

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang || need+=(clang)
have llvm-strip || need+=(llvm)
have ip || need+=(iproute2)
have cmake || need+=(cmake)
have make || need+=(make)
have g++ || need+=(g++)
have pkg-config || need+=(pkg-config)
have curl || need+=(curl)
# ecnet local does kube-proxy's job for its clusters with nftables rules in each node's namespace.
have nft || need+=(nftables)
# redis-benchmark and the redis server binary (redis-check-rdb run as redis-server) for the test that
# sends a non-HTTP protocol through the traffic path; redis-tools starts no service.
have redis-benchmark || need+=(redis-tools)
have node || need+=(nodejs)
have npm || need+=(npm)
[ -f /usr/include/bpf/libbpf.h ] || need+=(libbpf-dev)
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -f /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! have bpftool; then
  # Debian ships bpftool as its own package; Ubuntu inside linux-tools.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bpftool >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-tools-common "linux-tools-$(uname -r)" >/dev/null
fi

# vite (under vitest) and cmake-js need Node 20 or newer; Debian 12's own nodejs is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node $(node --version) is too old; ecnet needs Node 20 or newer (e.g. from the NodeSource apt repository)" >&2
  exit 1
fi

# The addon builds against the Node headers of the installed Node (no download): point cmake-js at them.
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node_api.h ]; then
  export npm_config_nodedir=/usr
fi

# `npm install` (from the lockfile) rather than `npm ci`: the registry reachable here serves rollup's native
# package for linux-gnu only, so no lockfile written here can list the other platforms' optional packages,
# which `npm ci` insists on. Optional packages it cannot fetch are skipped; the lockfile is not rewritten.
npm install --no-audit --no-fund --no-save --loglevel=error
npm run build --silent
