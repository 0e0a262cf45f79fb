"""Decode cost of the evaluation presets: JPEG decode + resize + crop + normalise per image,
each preset against the pre-preset transform (crop 0.875, bilinear, rounded sizes), side by
side in one run on the same ImageNet-sized JPEGs.

    python experiments/bench/decode.py [--images 64] [--repeats 5] [--write]

The JPEGs are random-content images at ImageNet's typical 500x375 (written once to a
temporary folder); every transform reads them from disk, as a data-loading worker does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _results import publish
from autocompress.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS, center_crop, evaluation_transform, \
    to_normalized_tensor


def before_presets(image: Image.Image, size: int):
    """The transform as it was before data.transform: shorter side to round(size / 0.875), bilinear."""
    image = image.convert("RGB")
    scale = round(size / 0.875)
    width, height = image.size
    new = (scale, max(1, round(height * scale / width))) if width <= height else (max(1, round(width * scale / height)), scale)
    return to_normalized_tensor(center_crop(image.resize(new, Image.BILINEAR), size), IMAGENET_MEAN, IMAGENET_STD)


def timed(paths: list[Path], transform, repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            with Image.open(path) as image:
                transform(image)
        runs.append(time.perf_counter() - start)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.images):
            path = Path(folder) / f"{i}.JPEG"
            Image.fromarray(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)).save(path, quality=90)
            paths.append(path)
        candidates = {"before presets (0.875, bilinear)": lambda image: before_presets(image, 224)}
        for name in ("timm_default", "spikformer_imagenet", "sdt_imagenet"):
            candidates[f"`{name}` ({PRESETS[name].crop_fraction:g}, {PRESETS[name].interpolation})"] = \
                lambda image, t=PRESETS[name]: evaluation_transform(image, 224, t)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):  # interleaved, so every transform sees the same machine load
            for name, transform in candidates.items():
                times[name] += timed(paths, transform, 1)
    base = statistics.median(times["before presets (0.875, bilinear)"])
    rows = [f"| {name} | {args.images / statistics.median(runs):,.0f} | {statistics.median(runs) / base:.2f}x |"
            for name, runs in times.items()]
    body = "\n".join([
        f"{args.images} random-content 500x375 JPEGs read from disk, decoded, resized, cropped to 224 and "
        f"normalised on one core; median of {args.repeats} interleaved runs.", "",
        "| transform | images/s | time vs before |", "|---|---:|---:|", *rows,
    ])
    publish("decode", "Decode cost of the evaluation presets", "python experiments/bench/decode.py --write", body,
            write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
