#!/usr/bin/env bash
# The README's test command: sets the machine up, builds, and runs every test tier (unit, kernel, CLI).
# Kernel tests need root; as root they run, otherwise they are skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p build
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json=build/vitest.json || rc=$?
# One plain closing line, whatever the reporter printed above.
node -e '
  const r = JSON.parse(require("fs").readFileSync("build/vitest.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' || true
exit "$rc"
