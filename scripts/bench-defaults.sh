#!/usr/bin/env bash
# What a user gets at the defaults: a folder binann's tests never use, `launch.sh` with nothing set,
# and a simulated person who reads the page for READ seconds and then labels at PACE labels/s
# through the HTTP API, 2 x #positives labels in all. Prints recall at 1x, 1.5x and 2x #positives
# labels and how much of the folder the ranking covered by the end.
#
#   scripts/bench-defaults.sh [COUNT] [POSITIVE]        e.g. 3000 bag
#   READ=60 PACE=5 KEEP=1 scripts/bench-defaults.sh ...  (KEEP=1 keeps the folder and the logs)
# Any BINANN_* variable set in the calling shell is passed on: that is how a setting is compared
# with the default (e.g. BINANN_INPUT_SIZE=224).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
count=${1:-3000}
positive=${2:-bag}
read_s=${READ:-60}
pace=${PACE:-5}
tmp=$(mktemp -d /tmp/binann-bench-defaults.XXXXXX)
launcher=
cleanup() {
  local status=$?
  if [ -n "$launcher" ]; then kill -TERM "$launcher" 2>/dev/null; wait "$launcher" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT

cargo build --quiet --workspace --bins
# Test-split images first would be the same as the tests' (the first N of train): take the last
# COUNT of the 70,000 by writing them all and keeping the tail, with names unlike the fixtures'.
./target/debug/binann demo-data --source .cache/fashion-mnist --out "$tmp/all" --truth "$tmp/all.csv" \
  --count 70000 --positive "$positive" >/dev/null
mkdir -p "$tmp/data"
python3 - "$tmp" "$count" <<'PY'
import csv, os, sys
tmp, count = sys.argv[1], int(sys.argv[2])
rows = list(csv.reader(open(f"{tmp}/all.csv")))[1:][-count:]
with open(f"{tmp}/truth.csv", "w", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["path", "label"])
    for i, row in enumerate(rows):
        name = f"IMG_{(i * 7919) % 100000:05d}_{i}.png"
        os.rename(f"{tmp}/all/{row[0]}", f"{tmp}/data/{name}")
        w.writerow([name, row[1]])
PY
rm -rf "$tmp/all" "$tmp/all.csv"
positives=$(awk -F, 'NR > 1 && $2 == 1' "$tmp/truth.csv" | wc -l)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "folder: $count images, $positives positive ($positive); reading ${read_s} s, then ${pace} labels/s"
echo "settings: $(env | grep '^BINANN_' | sort | tr '\n' ' ' || true)"

setsid bash launch.sh 127.0.0.1 "$port" false "$tmp/data" "$tmp/run" all >"$tmp/launch.log" 2>&1 &
launcher=$!
started=$(date +%s.%N)
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
  kill -0 "$launcher" 2>/dev/null || { tail -20 "$tmp/launch.log"; exit 1; }
  sleep 0.2
done
sleep "$read_s"
./target/debug/binann simulate --url "http://127.0.0.1:$port" --truth "$tmp/truth.csv" \
  --labels $((2 * positives)) --pace "$pace" --trace "$tmp/trace.csv" >"$tmp/summary.json"
elapsed=$(python3 -c "import time; print(round(time.time() - $started, 1))")
./target/debug/binann inspect "$tmp/run/ranking.bin" 2>/dev/null | sed -n 2p >"$tmp/ranking.json" || true
python3 - "$tmp" "$positives" "$count" "$elapsed" <<'PY'
import csv, json, sys
tmp, positives, count, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
found, curve = 0, []
for row in csv.DictReader(open(f"{tmp}/trace.csv")):
    found += int(row["truth"])
    curve.append(found)
def recall(k):
    k = int(round(k * positives))
    return curve[min(k, len(curve)) - 1] / positives if curve else 0.0
try:
    ranking = json.loads(open(f"{tmp}/ranking.json").read())
    covered = ranking.get("predicted", 0)
    model = ranking.get("model") or {}
except Exception:
    covered, model = 0, {}
print(json.dumps({
    "images": count, "positives": positives,
    "recall_1x": round(recall(1.0), 3), "recall_1_5x": round(recall(1.5), 3), "recall_2x": round(recall(2.0), 3),
    "predicted_at_end": covered, "predicted_share_at_end": round(covered / count, 3),
    "input_size": model.get("input_size"), "trained_on": model.get("labels_used"),
    "wall_s": float(elapsed),
}))
PY
