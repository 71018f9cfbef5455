#!/usr/bin/env bash
# The README's main command: set the machine up, then walk the seed's demo on a cluster set made of network
# namespaces on this machine (`ecnet demo`: up, run, down). Everything it creates is removed at the end,
# also on failure; a failing step says which one and why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec node dist/cli/main.js demo
