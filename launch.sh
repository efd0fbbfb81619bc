#!/usr/bin/env bash
# Starts binann: the server and, unless told otherwise, the AI processes (trainer, inferrer,
# selector), all sharing one run directory. Ctrl-C (or SIGTERM) stops every child.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat <<USAGE
usage: launch.sh HOST PORT RESET DATADIR [RUNDIR] [MODE]

  HOST     address to listen on (127.0.0.1: this machine only; 0.0.0.0: the network, with the
           access token BINANN_TOKEN, generated and printed by the server when unset)
  PORT     port of the web page and API; TensorBoard, when installed, gets PORT+1 on 127.0.0.1
  RESET    true: delete RUNDIR first and start over (only if it is a binann run directory)
           false: resume where the last session stopped
  DATADIR  folder of images to label (searched recursively)
  RUNDIR   where binann keeps its files (default: runs/<name of DATADIR> in binann's folder)
  MODE     all     the server and the AI processes (default)
           manual  the server only, no AI: label by hand
           server  the server only (the AI runs elsewhere on the shared RUNDIR)
           ai      trainer, inferrer and selector only (e.g. on a GPU box sharing RUNDIR)

Options of each process come from the environment (see config/binann.env), e.g.
  BINANN_SEED_IMAGES=~/examples BINANN_INPUT_SIZE=112 ./launch.sh 127.0.0.1 8080 false ~/photos
USAGE
}

if [ $# -lt 4 ] || [ $# -gt 6 ]; then usage >&2; exit 2; fi
host=$1 port=$2 reset=$3 datadir=$4
rundir=${5:-$here/runs/$(basename "$(realpath -m "$datadir")")}
mode=${6:-all}

case "$reset" in true|false) ;; *) echo "launch.sh: RESET must be true or false, got '$reset'" >&2; exit 2 ;; esac
case "$mode" in all|manual|server|ai) ;; *) echo "launch.sh: MODE must be all, manual, server or ai, got '$mode'" >&2; exit 2 ;; esac
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -le 65535 ] || { echo "launch.sh: PORT must be a number up to 65535, got '$port'" >&2; exit 2; }
[ -d "$datadir" ] || { echo "launch.sh: DATADIR $datadir is not a folder" >&2; exit 2; }

if [ "$reset" = true ] && [ -e "$rundir" ]; then
  if [ -f "$rundir/BINANN-RUNDIR" ]; then
    echo "launch.sh: RESET=true: deleting the run directory $rundir"
    rm -rf -- "$rundir"
  elif [ -d "$rundir" ] && [ -z "$(ls -A "$rundir")" ]; then
    :
  else
    echo "launch.sh: refusing to delete $rundir: it is not a binann run directory (no BINANN-RUNDIR file)" >&2
    exit 2
  fi
fi
[ -f "$rundir/BINANN-RUNDIR" ] || [ ! -e "$rundir" ] || [ -z "$(ls -A "$rundir")" ] || {
  echo "launch.sh: $rundir exists and is not a binann run directory; choose another RUNDIR" >&2; exit 2; }
mkdir -p "$rundir"

[ -f "$here/config/binann.env" ] && set -a && . "$here/config/binann.env" && set +a

profile=${BINANN_PROFILE:-dev}
bin="$here/target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
# Build everything at once: building packages one by one unifies dependency features differently
# and would compile shared crates (tch among them) again. Without libtorch only the server and the
# tools can be built; the AI processes are then reported missing, never faked.
build_log=$(mktemp)
if ! (cd "$here" && cargo build --quiet --profile "$profile" --workspace --bins 2>"$build_log"); then
  echo "launch.sh: the full build failed (libtorch missing? run scripts/setup.sh); building the server alone" >&2
  tail -n 5 "$build_log" >&2
  (cd "$here" && cargo build --quiet --profile "$profile" -p binann-server -p binann-cli)
fi
rm -f "$build_log"

want_server=false want_ai=false
case "$mode" in all) want_server=true want_ai=true ;; manual|server) want_server=true ;; ai) want_ai=true ;; esac

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo "launch.sh: stopping ${#pids[@]} processes"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 1
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
  fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

export BINANN_DATADIR="$datadir" BINANN_RUNDIR="$rundir"
# libtorch's OpenMP threads spin while waiting; beside each other (trainer + inferrer) on few cores
# that costs up to 7x. Passive waiting must be chosen before the processes start.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export BINANN_WEIGHTS="${BINANN_WEIGHTS:-$here/.cache/weights/mobilenet_v2.safetensors}"
if $want_ai && [ ! -f "$BINANN_WEIGHTS" ]; then
  echo "launch.sh: the backbone weights $BINANN_WEIGHTS are missing: run scripts/setup.sh" >&2
fi

ai_bins=()
if $want_ai; then
  for b in trainer inferrer selector; do
    if [ -x "$bin/binann-$b" ]; then
      ai_bins+=("$b")
    else
      echo "launch.sh: binann-$b is not available (not built: run scripts/setup.sh; see the README); continuing without it" >&2
    fi
  done
fi

if $want_server; then
  "$bin/binann-server" --host "$host" --port "$port" &
  pids+=($!)
fi
for b in "${ai_bins[@]}"; do
  "$bin/binann-$b" &
  pids+=($!)
done
if $want_ai && [ ${#ai_bins[@]} -gt 0 ]; then
  if command -v tensorboard >/dev/null; then
    # TensorBoard has no access token: on HOST it would show the training curves to anyone who
    # can reach the machine. It listens on this machine only, whatever HOST is.
    tensorboard --logdir "$rundir/runs" --host 127.0.0.1 --port $((port + 1)) >/dev/null 2>&1 &
    pids+=($!)
    case "$host" in
      127.*|localhost|::1) echo "launch.sh: TensorBoard on http://127.0.0.1:$((port + 1))" ;;
      *) echo "launch.sh: TensorBoard on http://127.0.0.1:$((port + 1)), this machine only (it has no access token); from another machine: ssh -L $((port + 1)):127.0.0.1:$((port + 1)) ${HOSTNAME:-THIS-MACHINE}, then open http://127.0.0.1:$((port + 1))" ;;
    esac
  else
    echo "launch.sh: TensorBoard is not installed (pip install tensorboard); its logs are in $rundir/runs"
  fi
fi
if $want_server; then
  case "$host" in
    127.*|localhost|::1) echo "launch.sh: binann on http://$host:$port (run directory $rundir); Ctrl-C stops everything" ;;
    *) echo "launch.sh: binann on port $port with its access token: open the ?token= URL binann-server printed (run directory $rundir); Ctrl-C stops everything" ;;
  esac
fi
# Stop everything as soon as any child exits, so a crash is not hidden behind a half-running set.
# Every child is meant to run until stopped, so any exit is a failure, and launch.sh reports it in
# its own status (a script or a service manager must not see success when binann is not running).
status=0
wait -n "${pids[@]}" || status=$?
[ "$status" -ne 0 ] || status=1
echo "launch.sh: a process exited (status $status); stopping the others" >&2
stop
exit "$status"
