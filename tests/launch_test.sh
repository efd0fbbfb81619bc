#!/usr/bin/env bash
# launch.sh: usage without arguments, refusal to delete what is not a run directory, and
# Ctrl-C stopping every child.
set -uo pipefail
cd "$(dirname "$0")/.."
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

out=$(bash launch.sh 2>&1); rc=$?
[ $rc -ne 0 ] || fail "no arguments should exit non-zero"
grep -q "usage: launch.sh HOST PORT RESET DATADIR" <<<"$out" || fail "no usage printed: $out"

mkdir -p "$tmp/data" "$tmp/precious"
echo keep > "$tmp/precious/thesis.txt"
out=$(bash launch.sh 127.0.0.1 0 true "$tmp/data" "$tmp/precious" manual 2>&1); rc=$?
[ $rc -ne 0 ] || fail "RESET on a foreign directory should fail"
grep -q "not a binann run directory" <<<"$out" || fail "unclear refusal: $out"
[ -f "$tmp/precious/thesis.txt" ] || fail "a foreign directory was deleted"

out=$(bash launch.sh 127.0.0.1 0 maybe "$tmp/data" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "RESET must be true or false" <<<"$out" || fail "bad RESET accepted: $out"

# A real start in manual mode, then SIGTERM: no child may survive.
python3 - "$tmp/data" <<'PY'
import sys, zlib, struct
def png(v):
    raw = b''.join(b'\x00' + bytes([v] * 8) for _ in range(8))
    ch = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return b'\x89PNG\r\n\x1a\n' + ch(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 0, 0, 0, 0)) + ch(b'IDAT', zlib.compress(raw)) + ch(b'IEND', b'')
for i in range(3):
    open(f'{sys.argv[1]}/{i}.png', 'wb').write(png(i * 50))
PY
mkdir -p "$tmp/run"
BINANN_PROFILE=dev setsid bash launch.sh 127.0.0.1 0 false "$tmp/data" "$tmp/run" manual >"$tmp/log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do grep -q "listening on" "$tmp/log" && break; sleep 0.5; done
grep -q "listening on" "$tmp/log" || fail "server did not start: $(cat "$tmp/log")"
[ -f "$tmp/run/BINANN-RUNDIR" ] || fail "run directory not created"
kill -TERM $launcher
for _ in $(seq 1 20); do kill -0 $launcher 2>/dev/null || break; sleep 0.5; done
kill -0 $launcher 2>/dev/null && fail "launch.sh did not exit on SIGTERM"
sleep 0.5
for pid in $(pgrep -f "target/debug/binann-server --host 127.0.0.1 --port 0\$"); do
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "BINANN_RUNDIR=$tmp/run" && fail "binann-server $pid survived launch.sh"
done
# Ctrl-C at a terminal: the terminal sends SIGINT to launch.sh and its children; none may survive.
python3 - "$tmp" <<'PY' || fail "Ctrl-C did not stop launch.sh and its children"
import os, pty, sys, time, select, signal
tmp = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.environ["BINANN_PROFILE"] = "dev"
    os.execvp("bash", ["bash", "launch.sh", "127.0.0.1", "0", "false", f"{tmp}/data", f"{tmp}/run", "manual"])
out = b""
deadline = time.time() + 300
while b"listening on" not in out and time.time() < deadline:
    if select.select([fd], [], [], 1)[0]:
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
assert b"listening on" in out, out.decode(errors="replace")
os.write(fd, b"\x03")  # Ctrl-C
deadline = time.time() + 20
while time.time() < deadline:
    done, _ = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    try:
        os.read(fd, 4096)
    except OSError:
        pass
    time.sleep(0.1)
else:
    os.kill(pid, signal.SIGKILL)
    sys.exit("launch.sh still running 20 s after Ctrl-C")
time.sleep(0.5)
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if b"binann-server" in cmd and f"BINANN_RUNDIR={tmp}/run".encode() in env:
            sys.exit(f"binann-server {p} survived Ctrl-C")
PY
# A process that fails to start makes launch.sh fail too: a foreign manifest stops the server.
mkdir -p "$tmp/broken" && touch "$tmp/broken/BINANN-RUNDIR" && echo "not a manifest" >"$tmp/broken/manifest.bin"
BINANN_PROFILE=dev timeout 300 bash launch.sh 127.0.0.1 0 false "$tmp/data" "$tmp/broken" manual >"$tmp/log3" 2>&1; rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "launch.sh exited $rc when the server could not start: $(cat "$tmp/log3")"
grep -q "manifest" "$tmp/log3" || fail "the server's reason is not shown: $(cat "$tmp/log3")"
# A process that dies later (kill -9) stops the rest and makes launch.sh fail.
BINANN_PROFILE=dev setsid bash launch.sh 127.0.0.1 0 false "$tmp/data" "$tmp/run" manual >"$tmp/log4" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do grep -q "listening on" "$tmp/log4" && break; sleep 0.5; done
grep -q "listening on" "$tmp/log4" || fail "server did not start: $(cat "$tmp/log4")"
server=$(pgrep -P $launcher -f binann-server) || fail "no server child of launch.sh"
kill -KILL $server
for _ in $(seq 1 40); do kill -0 $launcher 2>/dev/null || break; sleep 0.25; done
kill -0 $launcher 2>/dev/null && fail "launch.sh kept running after its server died"
wait $launcher; rc=$?
[ $rc -ne 0 ] || fail "launch.sh exited 0 after its server was killed"
# TensorBoard has no access token: whatever HOST is, launch.sh has it listen on this machine only
# (a stand-in on PATH records how it was started).
mkdir -p "$tmp/fakebin"
printf '#!/bin/sh\necho "$@" >"%s/tensorboard.args"\nexec sleep 300\n' "$tmp" >"$tmp/fakebin/tensorboard"
chmod +x "$tmp/fakebin/tensorboard"
PATH="$tmp/fakebin:$PATH" BINANN_PROFILE=dev setsid bash launch.sh 0.0.0.0 0 false "$tmp/data" "$tmp/run" ai >"$tmp/log5" 2>&1 &
launcher=$!
for _ in $(seq 1 100); do [ -s "$tmp/tensorboard.args" ] && break; sleep 0.2; done
kill -TERM $launcher; wait $launcher
grep -q -- "--host 127.0.0.1 " "$tmp/tensorboard.args" || fail "TensorBoard not bound to 127.0.0.1: $(cat "$tmp/tensorboard.args" 2>&1)"
grep -q "this machine only" "$tmp/log5" || fail "launch.sh does not say TensorBoard is local: $(cat "$tmp/log5")"
# RESET=true on a real run directory deletes it.
touch "$tmp/run/annotations.journal"
BINANN_PROFILE=dev timeout 2 bash launch.sh 127.0.0.1 0 true "$tmp/data" "$tmp/run" manual >"$tmp/log2" 2>&1
grep -q "deleting the run directory" "$tmp/log2" || fail "RESET=true did not reset: $(cat "$tmp/log2")"
echo "launch.sh tests passed"
