#!/usr/bin/env bash
# One shard of binann's embedding and prediction pass over a shared run directory:
#   binann-inferrer --once --shard K/N
# It embeds the images whose id modulo N is K (cached in RUNDIR/embeddings, reused by every later
# run), predicts them with RUNDIR's checkpoint when there is one, and exits. The Slurm job array
# (deploy/slurm) and the Kubernetes Indexed Job (deploy/kubernetes) both run this script.
#
#   deploy/run-shard.sh [K N]
#
# K and N default to the scheduler's: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm), or
# JOB_COMPLETION_INDEX and BINANN_SHARDS (Kubernetes). Environment:
#   BINANN_RUNDIR    the shared run directory (required; the server writes its manifest.bin)
#   BINANN_DATADIR   this machine's path to the images, when it differs from the server's
#   BINANN_BIN       the folder holding binann-inferrer (default: the build launch.sh runs,
#                    target/debug, or target/release with BINANN_PROFILE=release; then PATH)
#   BINANN_THREADS   CPU threads for the network and for decoding (default: the CPUs this task may
#                    use; in a container, set it to the CPU limit)
# Every other BINANN_* setting of binann-inferrer applies (see config/binann.env).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "run-shard.sh: $*" >&2; exit 2; }
k=${1:-${SLURM_ARRAY_TASK_ID:-${JOB_COMPLETION_INDEX:-}}}
n=${2:-${SLURM_ARRAY_TASK_COUNT:-${BINANN_SHARDS:-}}}
[[ "$k" =~ ^[0-9]+$ && "$n" =~ ^[0-9]+$ ]] || die "need a shard K of N: arguments K N, or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX/BINANN_SHARDS (got K='$k' N='$n')"
(( n >= 1 && k < n )) || die "shard $k/$n: need 0 <= K < N"
[[ -n "${BINANN_RUNDIR:-}" ]] || die "BINANN_RUNDIR must name the shared run directory"

profile=${BINANN_PROFILE:-dev}
[[ "$profile" == dev ]] && profile=debug
bin=${BINANN_BIN:-${CARGO_TARGET_DIR:-target}/$profile}
inferrer="$bin/binann-inferrer"
if [[ ! -x "$inferrer" ]]; then
  inferrer=$(command -v binann-inferrer) || die "binann-inferrer is neither in ${bin} nor on PATH: run scripts/setup.sh (or set BINANN_BIN)"
fi

# One pool of threads per task: libtorch's (OMP_NUM_THREADS) and the decoders' (RAYON_NUM_THREADS).
threads=${BINANN_THREADS:-$(nproc)}
export OMP_NUM_THREADS="$threads" RAYON_NUM_THREADS="$threads" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# File events do not cross machines.
export BINANN_FORCE_POLLING="${BINANN_FORCE_POLLING:-true}"
export BINANN_WEIGHTS="${BINANN_WEIGHTS:-$(pwd)/.cache/weights/mobilenet_v2.safetensors}"
echo "run-shard.sh: shard $k/$n of $BINANN_RUNDIR on $(uname -n), $threads threads"
exec "$inferrer" --once --shard "$k/$n"
