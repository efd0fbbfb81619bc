#!/usr/bin/env bash
# A peer to measure binann against: embeds the same folder of images with binann and with the
# Python stack the original tool used (Pillow + torchvision + torch 2.13: MobileNetV2 features and
# global average pooling, batch 32, 2 threads, 224 px, decoding in the same process), timing each
# whole process, and prints the median of RUNS runs of each and their ratio.
#
#   scripts/bench-peer.sh DIR [RUNS]        (RUNS defaults to 3)
#
# binann's side is `binann-embed-bench --images DIR`, which embeds as the inferrer does (decoding
# on every core one batch ahead of the network). The Python side runs in its own virtual
# environment, .cache/bench-peer-venv, made here on first use (torch's CPU wheel where
# download.pytorch.org is reachable, else PyPI's wheel with its CUDA libraries: about 5 GB).
# BENCH_SIZE, BENCH_BATCH and BENCH_THREADS change the input size, batch and threads of both;
# BENCH_PEER_WAIT=default runs the peer with libtorch's spinning threads (its default).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: scripts/bench-peer.sh DIR [RUNS]" >&2; exit 2; }
dir=$(cd "$1" && pwd)
runs=${2:-3}
size=${BENCH_SIZE:-224} batch=${BENCH_BATCH:-32} threads=${BENCH_THREADS:-2}
say() { printf '\033[1mbench-peer:\033[0m %s\n' "$*" >&2; }

venv=.cache/bench-peer-venv
if ! "$venv/bin/python" -c 'import torch, torchvision, PIL; assert torch.__version__.startswith("2.13.")' 2>/dev/null; then
  say "setting up $venv (torch 2.13, torchvision 0.28, Pillow)"
  python3 -m venv "$venv"
  pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
  "${pip[@]}" --timeout 10 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 torchvision==0.28.0 2>/dev/null \
    || "${pip[@]}" torch==2.13.0 torchvision==0.28.0
  "${pip[@]}" pillow
fi

profile=${BINANN_PROFILE:-dev}
bin="${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
say "building binann ($profile profile, as launch.sh runs it)"
cargo build --quiet --profile "$profile" --workspace --bins
weights=.cache/weights/mobilenet_v2.safetensors
pth=.cache/weights/mobilenet_v2-b0353104.pth
[ -f "$weights" ] || say "no converted weights ($weights): both sides run random weights (the speed is the same)"

# Whole-process wall-clock, user and system seconds of one command.
timed() {
  local TIMEFORMAT='%R %U %S' t
  t=$( { time "$@" >/dev/null 2>"$log"; } 2>&1 ) || { echo "bench-peer: failed: $*" >&2; cat "$log" >&2; exit 1; }
  echo "$t"
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count=$("$venv/bin/python" - "$dir" <<'PY'
import os, sys
ext = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
print(sum(os.path.splitext(f)[1].lower() in ext for _, _, fs in os.walk(sys.argv[1]) for f in fs))
PY
)
say "$count images in $dir; $runs runs of each, alternating; $size px, batch $batch, $threads threads; peer OMP_WAIT_POLICY=${BENCH_PEER_WAIT:-PASSIVE}"

# binann's processes make libtorch's threads wait without spinning (see binann_model::
# with_cpu_runtime_env); the peer gets the same unless BENCH_PEER_WAIT=default: spinning beside
# other busy processes made it up to 3x slower on the 2-core machine, which flatters binann.
peer_env=(env OMP_WAIT_POLICY=PASSIVE)
[ "${BENCH_PEER_WAIT:-PASSIVE}" = default ] && peer_env=(env -u OMP_WAIT_POLICY)
binann=() python=()
for i in $(seq "$runs"); do
  b=$(timed "$bin/binann-embed-bench" --images "$dir" --size "$size" --batch "$batch" --threads "$threads" --weights "$weights")
  p=$(timed "${peer_env[@]}" "$venv/bin/python" scripts/bench_peer.py "$dir" --size "$size" --batch "$batch" --threads "$threads" --weights "$pth")
  say "run $i: binann $b, python $p (wall, user, system seconds)"
  binann+=("$b") python+=("$p")
done

median() { printf '%s\n' "$@" | sort -n -k1,1 | awk -v n="$#" 'NR == int((n + 1) / 2)'; }
mb=$(median "${binann[@]}") mp=$(median "${python[@]}")
awk -v c="$count" -v s="$size" -v b="$batch" -v t="$threads" -v r="$runs" -v mb="$mb" -v mp="$mp" 'BEGIN {
  split(mb, B, " "); split(mp, P, " ")
  printf "images %d at %d px, batch %d, %d threads, median of %d whole-process runs\n", c, s, b, t, r
  printf "binann  %7.2f s  (%6.1f images/s; user %.1f s, system %.1f s)\n", B[1], c / B[1], B[2], B[3]
  printf "python  %7.2f s  (%6.1f images/s; user %.1f s, system %.1f s)\n", P[1], c / P[1], P[2], P[3]
  printf "binann / python throughput: %.2fx\n", P[1] / B[1]
}'
