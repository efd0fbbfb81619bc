#!/usr/bin/env bash
# Sets binann up on a fresh Debian/Ubuntu machine; idempotent, and fast when already done.
#   scripts/setup.sh           libtorch (CPU), ImageNet weights, Fashion-MNIST, build
#   scripts/setup.sh --test    the same, plus Chromium and the browser tests' npm packages
# Everything lands in gitignored folders of the project: .libtorch/, .onnxruntime/, .openvino/ and .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
with_test=false
[ "${1:-}" = "--test" ] && with_test=true

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "setup: $1 is required ($2)" >&2; exit 1; }; }
need cargo "install Rust from https://rustup.rs"
need python3 "apt-get install python3 python3-pip"

# libtorch 2.13 for tch 0.26, from PyPI's torch wheel; the two tiny CUDA runtime wheels satisfy
# libtorch_cpu's links. On a GPU box set BINANN_CUDA=1 to install the full CUDA wheel instead.
LIBTORCH_VERSION=2.13.0
if ! grep -qs "__version__ = '$LIBTORCH_VERSION" .libtorch/torch/version.py; then
  say "installing libtorch $LIBTORCH_VERSION into .libtorch (about 540 MB on CPU)"
  rm -rf .libtorch
  if [ "${BINANN_CUDA:-0}" = 1 ]; then
    python3 -m pip install --quiet --no-cache-dir --target .libtorch "torch==$LIBTORCH_VERSION"
  else
    python3 -m pip install --quiet --no-cache-dir --no-deps --target .libtorch \
      "torch==$LIBTORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
else
  say "libtorch $LIBTORCH_VERSION present"
fi

# ONNX Runtime for the frozen backbone on the CPU, from PyPI's onnxruntime wheel (its C library
# only: no Python package is imported). Without it the backbone runs in libtorch, slower.
ORT_VERSION=1.32.0
if [ ! -f ".onnxruntime/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" ]; then
  say "installing ONNX Runtime $ORT_VERSION into .onnxruntime (the onnxruntime wheel, about 17 MB)"
  rm -rf .onnxruntime
  python3 -m pip install --quiet --no-cache-dir --no-deps --target .onnxruntime "onnxruntime==$ORT_VERSION"
else
  say "ONNX Runtime $ORT_VERSION present"
fi

# OpenVINO runs the same graph, faster than ONNX Runtime on small inputs (the backbone times both
# on its first batches and keeps the faster); from PyPI's openvino wheel, its C library only.
OV_VERSION=2026.4.1
if ! grep -qs "^Version: $OV_VERSION\$" .openvino/openvino-"$OV_VERSION".dist-info/METADATA \
    || ! ls .openvino/openvino/libs/libopenvino_c.so.* >/dev/null 2>&1; then
  say "installing OpenVINO $OV_VERSION into .openvino (the openvino wheel, about 50 MB)"
  rm -rf .openvino
  python3 -m pip install --quiet --no-cache-dir --no-deps --target .openvino "openvino==$OV_VERSION"
else
  say "OpenVINO $OV_VERSION present"
fi

# Fashion-MNIST from Debian's package (MIT, Zalando): the demo dataset and the tests' real images.
FM_DEB_SHA256=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
fm=.cache/fashion-mnist
if [ ! -s "$fm/train-images-idx3-ubyte.gz" ]; then
  need apt-get "Fashion-MNIST comes from Debian's dataset-fashion-mnist package"
  say "fetching Fashion-MNIST (Debian package dataset-fashion-mnist, 31 MB)"
  mkdir -p .cache/deb && rm -f .cache/deb/*.deb
  (cd .cache/deb && apt-get download dataset-fashion-mnist 2>/dev/null || { apt-get update -qq && apt-get download dataset-fashion-mnist; })
  deb=$(ls .cache/deb/dataset-fashion-mnist_*.deb)
  echo "$FM_DEB_SHA256  $deb" | sha256sum -c --quiet - || { echo "setup: checksum mismatch for $deb" >&2; exit 1; }
  rm -rf .cache/deb/x && dpkg-deb -x "$deb" .cache/deb/x
  mkdir -p "$fm" && cp .cache/deb/x/usr/share/datasets/fashion-mnist/*.gz "$fm/"
fi
say "Fashion-MNIST present in $fm"

say "building (first build compiles libtorch's C++ wrapper: a few minutes)"
cargo build --workspace --bins --quiet

if [ -x scripts/fetch-weights.sh ] || [ -f scripts/fetch-weights.sh ]; then
  bash scripts/fetch-weights.sh
fi

if $with_test; then
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's Chromium for the browser tests"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
    else sudo apt-get install -y -qq chromium >/dev/null; fi
  fi
  if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules ]; then
    say "installing the browser tests' npm packages (playwright-core, no browser download)"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
  fi
fi
say "done ($root)"
