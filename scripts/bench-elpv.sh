#!/usr/bin/env bash
# binann on real inspection images: the mono cells of the ELPV solar-cell dataset (300 x 300
# electroluminescence photographs, a defect-inspection job unlike Fashion-MNIST), at the defaults.
#
#   scripts/bench-elpv.sh
#
# Writes two folders under bench-out/elpv and runs, on each, binann-bench-recall (binann started as
# launch.sh starts it, a simulated person at 5 labels/s) and then binann-bench-ceiling on the run
# directory it leaves (what binann's embeddings allow with every label, and an idealised loop):
#   all   1,074 mono cells; positive: defective, annotated with probability >= 2/3 (369, 34 %)
#   rare  the 705 functional and 1/3 cells plus 24 certain defects drawn at random (3.3 %)
# The wheel comes from PyPI (`pip download`, checked against its SHA-256) into .cache/elpv; the
# poly cells are never used. Images CC BY-NC-SA 4.0 (Buerhop-Lutz et al., Deitsch et al.).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1mbench-elpv:\033[0m %s\n' "$*" >&2; }

wheel_sha=85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c
cache=.cache/elpv
wheel=$cache/elpv_dataset-1.0.0.post1-py3-none-any.whl
if [ ! -f "$wheel" ]; then
  say "downloading elpv-dataset 1.0.0.post1 from PyPI (91 MB)"
  mkdir -p "$cache"
  python3 -m pip download --no-deps --quiet -d "$cache" elpv-dataset==1.0.0.post1 \
    || { echo "bench-elpv: pip could not download elpv-dataset (python3 -m pip is needed)" >&2; exit 1; }
fi
echo "$wheel_sha  $wheel" | sha256sum --check --quiet \
  || { echo "bench-elpv: $wheel does not match its SHA-256; remove it to download it again" >&2; exit 1; }

out=bench-out/elpv
if [ ! -f "$out/rare/seed-1/truth.csv" ]; then
  say "writing the folders in $out"
  rm -rf "$out"
  python3 - "$wheel" "$out" <<'EOF'
import os, random, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(wheel)
cells = []
for line in z.read('elpv_dataset/data/labels.csv').decode().splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[2] == 'mono':
        cells.append((fields[0], float(fields[1])))
def write(name, chosen, positive):
    folder = os.path.join(out, name, 'seed-1')
    os.makedirs(os.path.join(folder, 'data'))
    with open(os.path.join(folder, 'truth.csv'), 'w') as truth:
        truth.write('path,label,class\n')
        for path, probability in chosen:
            base = os.path.basename(path)
            with open(os.path.join(folder, 'data', base), 'wb') as f:
                f.write(z.read('elpv_dataset/data/' + path))
            p = positive(probability)
            truth.write(f"{base},{int(p)},{'defect' if p else 'functional'}\n")
    print(f"{name}: {len(chosen)} cells, {sum(positive(p) for _, p in chosen)} positive", file=sys.stderr)
write('all', cells, lambda p: p > 0.5)
random.seed(7)
certain = [c for c in cells if c[1] == 1.0]
write('rare', [c for c in cells if c[1] < 0.5] + random.sample(certain, 24), lambda p: p == 1.0)
EOF
fi

cargo build --release --quiet --workspace --bins
for folder in all rare; do
  positives=$(grep -c ',1,' "$out/$folder/seed-1/truth.csv")
  say "$folder: binann at the defaults, 3 x $positives labels"
  ./target/release/binann-bench-recall --out "$out/$folder" --labels $((3 * positives)) | grep -v '^$'
  say "$folder: the ceiling of the embeddings in that run"
  ./target/release/binann-bench-ceiling "$out/$folder/seed-1/run" "$out/$folder/seed-1/truth.csv"
done
