#!/usr/bin/env bash
# binann's embedding throughput beside the Python runtimes on the same graph and machine: writes
# binann's ONNX graph of the backbone (`binann-embed-bench --write-onnx`, the five-level
# embedding, N x 1920), times that file with onnxruntime (CPU EP, ORT_ENABLE_ALL, intra-op threads
# = cores, inter-op 1, sequential) and OpenVINO (CPU, THROUGHPUT hint with an AsyncInferQueue of
# the plugin's optimal number of requests; LATENCY hint with one synchronous request) through
# scripts/bench_runtime.py and binann's own benchmark (libtorch, ONNX Runtime and OpenVINO, and the
# runtime binann keeps after timing both on its first batches), one size after the other, and
# prints one table of images/s at 224, 112 and 64 px, random input (the peers: batch 16 a
# request; binann: its inferrer's batch of 32, 16 a stream on 2 threads).
#
#   scripts/bench-runtime.sh [SECONDS]        (timed seconds per case; defaults to 4)
#   BENCH_RUNTIME_ROUNDS=N                    (rounds of every case, the best kept; defaults to 2)
#
# The Python side runs in its own virtual environment, .cache/bench-runtime-venv, made here on
# first use (onnxruntime 1.32.0, OpenVINO 2026.4.1, numpy from PyPI). OpenVINO runs in f32 like
# the rest; BENCH_OV_PRECISION=default lets its CPU plugin choose (bf16 on CPUs with AVX-512 BF16
# or AMX). BENCH_RUNTIME_ONNX=FILE times FILE on the Python side instead of the graph binann
# writes (the table then says so). Run it on an otherwise idle machine: the Python side reports
# how much CPU other processes used during its cases.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-4}
[[ $# -le 1 && $seconds =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "usage: scripts/bench-runtime.sh [SECONDS]" >&2; exit 2; }
say() { printf '\033[1mbench-runtime:\033[0m %s\n' "$*" >&2; }

out=.cache/bench-runtime
mkdir -p "$out"
bin="${CARGO_TARGET_DIR:-target}/debug/binann-embed-bench"
say "building binann-embed-bench (dev profile)"
cargo build -p binann-bench --bin binann-embed-bench --quiet

graph=$out/levels.onnx
if [ -n "${BENCH_RUNTIME_ONNX:-}" ]; then
  graph=$BENCH_RUNTIME_ONNX
  [ -f "$graph" ] || { echo "bench-runtime: BENCH_RUNTIME_ONNX=$graph: no such file" >&2; exit 1; }
  say "timing $graph on the Python side, not binann's own graph"
else
  "$bin" --help | grep -q -- --write-onnx \
    || { echo "bench-runtime: $bin has no --write-onnx (set BENCH_RUNTIME_ONNX=FILE to time another graph)" >&2; exit 1; }
  rm -f "$graph"
  "$bin" --write-onnx "$graph" >/dev/null
  [ -s "$graph" ] || { echo "bench-runtime: binann-embed-bench wrote no $graph" >&2; exit 1; }
  say "wrote binann's graph: $graph ($(( $(stat -c %s "$graph") / 1024 )) KiB)"
fi

venv=.cache/bench-runtime-venv
ov_version=2026.4.1
if ! "$venv/bin/python" - "$ov_version" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
import numpy, onnxruntime, openvino
assert version("onnxruntime") == "1.32.0" and version("openvino") == sys.argv[1]
PY
then
  say "setting up $venv (onnxruntime 1.32.0, OpenVINO $ov_version, numpy)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime==1.32.0 "openvino==$ov_version" numpy
fi

cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l)
model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
versions=$("$venv/bin/python" -c 'from importlib.metadata import version as v
print(", ".join(f"{n} {v(p)}" for n, p in [("onnxruntime", "onnxruntime"), ("OpenVINO", "openvino"), ("numpy", "numpy")]))')
say "${model:-unknown CPU}: $cores cores, nproc $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg); $versions"

peers=$(mktemp) binann=$(mktemp)
trap 'rm -f "$peers" "$binann"' EXIT
# One size at a time, the Python side then binann's, so that a machine whose speed drifts over
# minutes (a shared host) drifts on both sides of each ratio alike; every case runs in each of
# BENCH_RUNTIME_ROUNDS rounds (default 2), and the table keeps each case's best round.
rounds=${BENCH_RUNTIME_ROUNDS:-2}
for round in $(seq "$rounds"); do for size in 224 112 64; do
  say "$size px, Python side: onnxruntime, OpenVINO THROUGHPUT, OpenVINO LATENCY; $seconds s per case"
  "$venv/bin/python" scripts/bench_runtime.py "$graph" --seconds "$seconds" --sizes "$size" --batch 16 \
    --ov-precision "${BENCH_OV_PRECISION:-f32}" >>"$peers"
  say "$size px, binann side: binann-embed-bench --seconds $seconds --sizes $size --no-head"
  "$bin" --seconds "$seconds" --sizes "$size" --no-head | tee -a "$binann" | { grep '^embed' || true; } | sed 's/^/  /' >&2
done; done

awk -v secs="$seconds" -v rounds="$rounds" -v cores="$cores" -v nproc="$(nproc)" -v cpu="${model:-unknown CPU}" \
    -v graph="$graph" -v own="${BENCH_RUNTIME_ONNX:-}" -v prec="${BENCH_OV_PRECISION:-f32}" '
  FNR == NR {   # scripts/bench_runtime.py: runtime, size, images/s, other CPUs, note
    if (/^#/) next
    split($0, f, "\t")
    if (f[3] ~ /^[0-9.]+$/ && (!((f[1], f[2]) in rate) || f[3] + 0 > rate[f[1], f[2]] + 0)) rate[f[1], f[2]] = f[3]
    else if (!((f[1], f[2]) in rate)) rate[f[1], f[2]] = f[3]
    if (f[4] != "-" && f[4] + 0 > busy) busy = f[4] + 0
    next
  }
  match($0, /^embed +[0-9]+ px: +(libtorch|onnxruntime|openvino) +[0-9.]+ images\/s/) {   # binann-embed-bench
    size = $2; rt = $4; sub(/:$/, "", rt)
    if ($5 + 0 > rate["binann-" rt, size] + 0) rate["binann-" rt, size] = $5
    # The runtime this round chose: its best round is the figure of binann.
    if (rt == current[size] && $5 + 0 > mine[size] + 0) mine[size] = $5
  }
  match($0, /^embed +[0-9]+ px: chosen /) {
    current[$2] = $5
    if (index(" " chosen[$2] " ", " " $5 " ") == 0) chosen[$2] = (chosen[$2] == "" ? $5 : chosen[$2] " " $5)
  }
  function cell(v) { return (v ~ /^[0-9.]+$/) ? sprintf("%.1f", v) : (v == "" ? "n/a" : v) }
  END {
    n = split("binann-libtorch binann-onnxruntime binann-openvino ort ov-throughput ov-latency", col, " ")
    printf "\nimages/s, random float32 input (peers: batch 16 a request; binann: batch 32, split among its streams), %s s per case, best of %d rounds; %s, %d cores, nproc %d\n", secs, rounds, cpu, cores, nproc
    printf "Python peers time %s%s; OpenVINO precision %s\n", graph, (own != "" ? " (not binann'"'"'s own graph)" : ", written by binann"), prec
    printf "%-6s  %15s  %18s  %15s  %18s  %19s  %16s  %13s  %21s\n", "size", "binann libtorch", "binann onnxruntime",
           "binann openvino", "Python onnxruntime", "OpenVINO throughput", "OpenVINO latency", "binann chose", "binann / fastest peer"
    split("224 112 64", sizes, " ")
    for (i = 1; i <= 3; i++) {
      s = sizes[i]; line = sprintf("%-6s", s " px"); best = 0
      w[1] = 15; w[2] = 18; w[3] = 15; w[4] = 18; w[5] = 19; w[6] = 16
      for (c = 1; c <= n; c++) {
        v = rate[col[c], s]
        line = line sprintf("  %" w[c] "s", cell(v))
        if (c >= 4 && v ~ /^[0-9.]+$/ && v + 0 > best) best = v + 0
      }
      b = mine[s]
      line = line sprintf("  %13s", chosen[s] == "" ? "n/a" : chosen[s])
      line = line sprintf("  %21s", (b ~ /^[0-9.]+$/ && best > 0) ? sprintf("%.2f", b / best) : "n/a")
      print line
    }
    printf "other processes used up to %.2f CPUs during the Python cases\n", busy
  }' "$peers" "$binann"
