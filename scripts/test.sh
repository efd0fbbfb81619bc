#!/usr/bin/env bash
# The README's test command: sets up what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== cargo tests"
cargo test --workspace --quiet --no-fail-fast
echo "== launch.sh tests"
bash tests/launch_test.sh
if [ -f tests/browser/run.sh ]; then
  echo "== browser tests"
  bash tests/browser/run.sh
fi
echo "all tests passed"
