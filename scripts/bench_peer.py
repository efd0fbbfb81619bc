"""The Python stack binann succeeds, as a peer for scripts/bench-peer.sh: PIL decodes, torchvision
resizes and normalises, torch runs MobileNetV2's features and the same global average pooling
(the embedding binann computes), batch after batch, on the given number of threads.

usage: bench_peer.py DIR [--size 224] [--batch 32] [--threads 2] [--weights mobilenet_v2-b0353104.pth]
"""
import argparse
import os
import sys
import time

started = time.monotonic()
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(args.dir)
        for f in files
        if os.path.splitext(f)[1].lower() in EXTENSIONS
    )
    if not paths:
        sys.exit(f"no images in {args.dir}")
    model = torchvision.models.mobilenet_v2()
    if args.weights and os.path.exists(args.weights):
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    model.eval()
    # The same input as binann's: the whole image squeezed to size x size, RGB, ImageNet statistics.
    tf = transforms.Compose([
        transforms.Resize((args.size, args.size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    done = failed = 0
    with torch.inference_mode():
        for i in range(0, len(paths), args.batch):
            images = []
            for p in paths[i:i + args.batch]:
                try:
                    with Image.open(p) as im:
                        images.append(tf(im.convert("RGB")))
                except Exception:  # an unreadable image is skipped, as binann does
                    failed += 1
            if images:
                features = model.features(torch.stack(images))
                embeddings = features.mean((2, 3))
                assert embeddings.shape[1] == 1280
                done += len(images)
    elapsed = time.monotonic() - started
    print(f"python peer: embedded {done} images at {args.size} px, batch {args.batch}, {torch.get_num_threads()} threads: "
          f"{elapsed:.2f} s, {done / elapsed:.1f} images/s ({failed} unreadable)")


main()
