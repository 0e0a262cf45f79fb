"""Validation data path: images/s of the loader every evaluation used to run (decode and
normalise every JPEG, every time), the decoded cache's first pass, the cached pass, and
a bare loop over pre-decoded tensors, side by side on the same synthetic ImageNet-like
folder.

    python experiments/bench/data_path.py [--images 2000] [--workers N] [--size 224] [--write]

The folder holds ``--images`` JPEGs (q90, about 500x375 like ImageNet's validation set)
cut from scikit-learn's two bundled photographs (random crops, scales, flips and colour
shifts, so the content and the JPEG statistics are those of photographs). Every path
produces the same normalised float32 batches of 128 in the same random order (checked);
the cached pass must reach at least 0.9x the bare loop. Pillow's draft mode (JPEG
decoding at 1/2, 1/4 or 1/8 scale) is measured on large images too: it only applies when
an image is more than twice the size it is resized to, and it changes the pixels, so it
is not used.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _results import publish
from autocompress.data import DataBundle, stratified_order
from autocompress.data.decoded import _build, batches, normalize, open_or_build
from autocompress.data.imagefolder import ImageFolderDataset
from autocompress.data.transforms import PRESETS, center_crop, resize_shorter

BATCH = 128


def photographs() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]  # 427x640 RGB photographs


def make_folder(root: Path, count: int, classes: int = 20, size=(500, 375), seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    sources = photographs()
    samples = []
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.55, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shifted = np.clip(crop * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 4, crop.shape), 0, 255).astype(np.uint8)
        width, height = (size if rng.random() < 0.8 else size[::-1])
        image = Image.fromarray(shifted).resize((int(width * rng.uniform(0.9, 1.1)), int(height * rng.uniform(0.9, 1.1))),
                                                Image.BICUBIC)
        folder = root / f"class{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.JPEG"
        image.save(path, quality=90)
        samples.append((str(path), i % classes))
    return samples


def timed(label: str, passes, count: int) -> float:
    """Best of the passes' images/s (each a callable that makes its batches and drops them)."""
    best = 0.0
    for run in passes:
        start = time.perf_counter()
        run()
        best = max(best, count / (time.perf_counter() - start))
    print(f"{label}: {best:,.0f} images/s", file=sys.stderr)
    return best


def drain(iterator) -> None:
    for _batch in iterator:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="data-loading processes")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7, help="passes of the fast paths, interleaved (best kept)")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    transform = PRESETS["spikformer_imagenet"]
    device = torch.device("cpu")

    with tempfile.TemporaryDirectory(prefix="autocompress-data-") as tmp:
        samples = make_folder(Path(tmp) / "val", args.images)
        dataset = ImageFolderDataset(samples, args.size, transform)
        order = stratified_order([label for _, label in samples], 0)
        bundle = DataBundle(validation=dataset, calibration=torch.empty(0), calibration_labels=torch.empty(0),
                            num_classes=20, description="bench")

        today = timed("today's loader (decode + normalise every image, every evaluation)", [
            lambda: drain(bundle.validation_batches(BATCH, args.workers, device, order))], args.images)

        def first_pass(use_simplejpeg: bool):
            def run():
                folder = Path(tmp) / f"cache-{use_simplejpeg}-{time.perf_counter_ns()}"
                folder.mkdir()
                if not use_simplejpeg:
                    sys.modules["simplejpeg"] = None  # the import fails: Pillow decodes
                try:
                    _build(samples, args.size, transform, folder, workers=args.workers, say=lambda _m: None)
                finally:
                    sys.modules.pop("simplejpeg", None)
                return folder
            return run

        first = timed("first pass, simplejpeg (writes the cache)", [first_pass(True)], args.images)
        first_pil = timed("first pass, Pillow (writes the cache)", [first_pass(False)], args.images)

        decoded = open_or_build(samples, args.size, transform, Path(tmp) / "node-cache", workers=args.workers,
                                say=lambda _m: None)
        memory = torch.from_numpy(np.array(decoded.images))  # every image decoded, in memory

        def bare_batches():
            for i in range(0, len(order), BATCH):
                yield normalize(memory[torch.from_numpy(order[i:i + BATCH])], transform)

        cached = bare_rate = 0.0
        for _ in range(args.repeats):  # interleaved, so that both see the same machine
            cached = max(cached, timed("cached pass", [lambda: drain(batches(decoded, order, BATCH, device))],
                                       args.images))
            bare_rate = max(bare_rate, timed("bare loop over pre-decoded tensors", [lambda: drain(bare_batches())],
                                             args.images))
        same = all(torch.equal(a[0], b[0]) and torch.equal(a[0], c)
                   for a, b, c in zip(bundle.validation_batches(BATCH, args.workers, device, order),
                                      batches(decoded, order, BATCH, device), bare_batches()))

        # Pillow's draft mode, on large photographs where it applies
        large = make_folder(Path(tmp) / "large", 60, size=(1600, 1200), seed=1)
        target = math.floor(args.size / transform.crop_fraction)

        def pillow(draft: bool):
            out = []
            for path, _ in large:
                with Image.open(path) as image:
                    if draft:
                        image.draft("RGB", (target, target))
                    image = image.convert("RGB")
                    out.append(np.asarray(center_crop(resize_shorter(image, target, transform.interpolation),
                                                      args.size), dtype=np.int16))
            return out

        full_rate = timed("large JPEGs, Pillow", [lambda: pillow(False)] * 2, len(large))
        draft_rate = timed("large JPEGs, Pillow draft", [lambda: pillow(True)] * 2, len(large))
        full_pixels, draft_pixels = pillow(False), pillow(True)
        diff = float(np.mean([np.abs(a - b).mean() for a, b in zip(full_pixels, draft_pixels)]))

    lines = [
        f"{args.images:,} synthetic photographs (JPEG q90, about 500x375), {args.size}x{args.size} spikformer_imagenet "
        f"transform, batches of {BATCH} in the seeded random order, {args.workers} data-loading processes, CPU "
        "(the cached pass normalises on the device; here the device is the CPU).",
        "",
        "| path | images/s | vs today's loader | vs bare loop |", "|---|---:|---:|---:|",
        f"| today's loader: decode, resize, normalise every image in every evaluation | {today:,.0f} | 1.00x | "
        f"{today / bare_rate:.2f}x |",
        f"| first pass, Pillow decode, uint8 into the cache | {first_pil:,.0f} | {first_pil / today:.2f}x | "
        f"{first_pil / bare_rate:.2f}x |",
        f"| first pass, simplejpeg decode, uint8 into the cache (used) | {first:,.0f} | {first / today:.2f}x | "
        f"{first / bare_rate:.2f}x |",
        f"| cached pass: memmap rows, normalised | {cached:,.0f} | {cached / today:.2f}x | {cached / bare_rate:.2f}x |",
        f"| bare loop over pre-decoded in-memory tensors | {bare_rate:,.0f} | {bare_rate / today:.2f}x | 1.00x |",
        "",
        f"Same batches, bit for bit, from the loader, the cache and the bare loop: {'yes' if same else 'NO'}.  ",
        f"Cached pass / bare loop: {cached / bare_rate:.2f} (target >= 0.9).  ",
        f"Pillow draft mode on 1600x1200 JPEGs: {draft_rate:,.0f} vs {full_rate:,.0f} images/s "
        f"({draft_rate / full_rate:.2f}x), mean absolute pixel difference {diff:.2f} / 255 after resize and crop: "
        "not used (it changes the images evaluated, and never applies at ImageNet's usual 500x375).",
    ]
    publish("data_path", "Validation data path", "python experiments/bench/data_path.py --write", "\n".join(lines),
            write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
