#!/usr/bin/env bash
# The README's first command: set binann up, write the demo dataset (5,000 Fashion-MNIST images,
# positive class "sneaker") and start binann on it at http://127.0.0.1:8080 (PORT=... to change).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
count=${DEMO_COUNT:-5000}
if [ ! -d demo/data ]; then
  ./target/debug/binann demo-data --source .cache/fashion-mnist --out demo/data --truth demo/truth.csv \
    --count "$count" --positive "${DEMO_POSITIVE:-sneaker}"
fi
exec ./launch.sh "${HOST:-127.0.0.1}" "${PORT:-8080}" "${RESET:-false}" demo/data demo/run "${MODE:-all}"
