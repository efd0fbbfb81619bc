#!/usr/bin/env bash
# binann on a large folder, as a user runs it: COPIES x 63,600 Fashion-MNIST images with "sneaker"
# at 1 % (the same images under other names, one subfolder per copy), launch.sh at the defaults,
# and a simulated person labelling at 5 labels/s for 10 minutes (3,000 labels).
#
#   scripts/bench-large.sh [COPIES] [--shards N]
#
# COPIES defaults to 3: 190,800 images, 1,908 positives (16: 1,017,600 images). With --shards N the
# folder is embedded before labelling starts, as a user with a million images would: the server
# writes the manifest, N `deploy/run-shard.sh K N` run side by side on this machine's cores (the
# time is printed), and the labelling run resumes that run directory.
#
# binann-bench-recall prints recall, the time until every image is predicted, the seconds from a
# label to a ranking trained on it, and each process's peak resident memory (sampled every 10 s).
# The folder stays in bench-out/large-COPIES (about 1 KB an image); run again to measure again.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1mbench-large:\033[0m %s\n' "$*" >&2; }

copies=3 shards=0
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=${2:?--shards needs a number}; shift 2 ;;
    *) copies=$1; shift ;;
  esac
done
[[ "$copies" =~ ^[1-9][0-9]*$ && "$shards" =~ ^[0-9]+$ ]] || { echo "usage: scripts/bench-large.sh [COPIES] [--shards N]" >&2; exit 2; }
source=${BINANN_FASHION_MNIST:-.cache/fashion-mnist}
[ -f "$source/train-images-idx3-ubyte.gz" ] || { echo "bench-large: no Fashion-MNIST in $source (scripts/setup.sh --test fetches it)" >&2; exit 1; }
cargo build --release --quiet --workspace --bins

one=bench-out/large-source
if [ ! -f "$one/truth.csv" ]; then
  say "writing 63,600 Fashion-MNIST images, sneaker at 1 %, in $one"
  rm -rf "$one"
  ./target/release/binann demo-data --source "$source" --count 63600 --positive sneaker --prevalence 0.01 --seed 1 \
    --out "$one/data" --truth "$one/truth.csv"
fi
out=bench-out/large-$copies
if [ ! -f "$out/seed-1/truth.csv" ]; then
  say "copying them $copies times into $out"
  rm -rf "$out"
  mkdir -p "$out/seed-1/data"
  head -1 "$one/truth.csv" > "$out/seed-1/truth.tmp"
  for c in $(seq 1 "$copies"); do
    cp -r "$one/data" "$out/seed-1/data/copy-$c"
    tail -n +2 "$one/truth.csv" | sed "s|^|copy-$c/|" >> "$out/seed-1/truth.tmp"
  done
  mv "$out/seed-1/truth.tmp" "$out/seed-1/truth.csv"
fi
images=$(($(wc -l < "$out/seed-1/truth.csv") - 1))
prepared=()
if [ "$shards" -gt 0 ]; then
  run="$out/seed-1/run"
  say "$images images: the server writes the manifest"
  setsid bash launch.sh 127.0.0.1 0 true "$out/seed-1/data" "$run" server > "$out/seed-1/manifest.log" 2>&1 &
  server=$!
  until [ -f "$run/manifest.bin" ]; do
    kill -0 "$server" 2>/dev/null || { echo "bench-large: the server stopped; see $out/seed-1/manifest.log" >&2; exit 1; }
    sleep 1
  done
  kill -TERM -- "-$server"; wait "$server" || true
  threads=$(( $(nproc) / shards )); [ "$threads" -ge 1 ] || threads=1
  say "$shards shards of deploy/run-shard.sh, $threads threads each, embed the folder"
  start=$(date +%s.%N)
  for k in $(seq 0 $((shards - 1))); do
    BINANN_RUNDIR="$run" BINANN_THREADS=$threads deploy/run-shard.sh "$k" "$shards" > "$out/seed-1/shard-$k.log" 2>&1 &
  done
  wait
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  say "embedded $images images in ${seconds} s ($(echo "$images / $seconds" | bc) images/s)"
  prepared=(--prepared)
fi
say "$images images: binann at the defaults, 3,000 labels at 5 labels/s"
./target/release/binann-bench-recall --out "$out" --labels 3000 "${prepared[@]}" | grep -v '^$'
