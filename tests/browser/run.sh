#!/usr/bin/env bash
# The page's unit tests (tests/web, plain node), then browser tests of the annotation page: builds the server (which compiles web/ into its binary),
# installs playwright-core if needed, and drives the system Chromium against the real server.
#   bash tests/browser/run.sh                 all tests
#   bash tests/browser/run.sh --test-name-pattern=AUTO
# Environment: CHROMIUM_PATH (default /usr/bin/chromium), BINANN_SERVER_BIN (default: the cargo build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "== npm ci (tests/browser)"
  (cd "$here" && npm ci --no-audit --no-fund)
fi

if [ -z "${BINANN_SERVER_BIN:-}" ]; then
  echo "== cargo build (the server compiles web/ into its binary)"
  (cd "$root" && cargo build --workspace --bins --quiet)
fi

echo "== page unit tests (node --test tests/web)"
node --test --test-reporter=dot "$root/tests/web/"

mkdir -p "$here/artifacts"
echo "== browser tests"
cd "$here"
exec node --test --test-reporter=spec --test-concurrency=1 "$@" page.test.mjs seeds.test.mjs
