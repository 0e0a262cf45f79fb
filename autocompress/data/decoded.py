"""The decoded validation cache: an image folder's validation set, resized and cropped
once, kept as uint8 in a memory-mapped file that every evaluation on the node reads.

A full ImageNet validation decodes 50,000 JPEGs (about 165 core-seconds with Pillow);
a search validates hundreds of candidates. The first evaluation on a node writes
``<cache>/decoded/<key>/images.u8`` ([N, C, S, S] uint8, 7.5 GB at 224x224) and
``meta.json`` beside it; later ones read rows of it, move uint8 batches to the device
(pinned memory, non-blocking) and normalise there, with the same float32 operations as
the decoding path, so the numbers are the same. The key covers the file list, each
file's size and modification time, the image size and the transform's geometry, so
changed data get a new cache. The file is written under a temporary name and renamed
when complete; a lock makes one process per node build it while the others wait. When
the disk lacks room, a message says so and evaluations decode as before.

The first pass decodes JPEGs with simplejpeg (libjpeg-turbo, pixel-identical to
Pillow for YCbCr JPEGs, about 1.7x faster to decode) and everything else with Pillow,
resizes and crops with Pillow as the decoding path does, and skips float conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from autocompress.atomic import atomic_write_json
from autocompress.data.transforms import EvalTransform, center_crop, resize_shorter

log = logging.getLogger("autocompress.data")

FORMAT = 1
SPARE_BYTES = 1 << 30  # left free on the cache's disk


def _decode(path: str, mode: str = "RGB") -> Image.Image:
    """The image in ``mode`` (RGB or L), decoded as Pillow decodes it (simplejpeg where it
    is identical: colour JPEGs converted to RGB)."""
    if mode == "RGB" and path.lower().endswith((".jpg", ".jpeg", ".jpe")):
        try:
            import simplejpeg

            data = Path(path).read_bytes()
            if simplejpeg.is_jpeg(data) and simplejpeg.decode_jpeg_header(data)[2] == "YCbCr":
                return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB"))
        except (ImportError, ValueError):
            pass  # not installed, or a JPEG it does not take: Pillow below
    with Image.open(path) as image:
        return image.convert(mode)


def geometry(path: str, image_size: int, transform: EvalTransform) -> np.ndarray:
    """An image resized and cropped as the evaluation transform does: [C, S, S] uint8."""
    image = _decode(path, transform.mode)
    image = center_crop(resize_shorter(image, math.floor(image_size / transform.crop_fraction),
                                       transform.interpolation), image_size)
    array = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def normalize(images: torch.Tensor, transform: EvalTransform) -> torch.Tensor:
    """uint8 [B, C, S, S] -> the normalised float32 batch (the decoding path's arithmetic)."""
    mean = torch.tensor(transform.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(transform.std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def cache_key(samples: Sequence[tuple[str, int]], image_size: int, transform: EvalTransform) -> str:
    """What the cache depends on: each file (path, label, size, mtime), the size, the geometry."""
    geometry_key = [FORMAT, image_size, transform.crop_fraction, transform.interpolation]
    if transform.channels != 3:  # RGB caches keep the keys they had before grayscale existed
        geometry_key.append(transform.channels)
    digest = hashlib.sha256(json.dumps(geometry_key).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class DecodedImages:
    """A complete cache, opened read-only: ``rows(indices)`` -> (uint8 batch, readable mask)."""

    def __init__(self, folder: Path, transform: EvalTransform):
        self.folder, self.transform = folder, transform
        meta = json.loads((folder / "meta.json").read_text())
        self.count, self.shape = meta["count"], tuple(meta["shape"])
        self.labels = np.asarray(meta["labels"], dtype=np.int64)
        self.readable = np.load(folder / "readable.npy")
        self.sources = meta["sources"]
        self.images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(self.count, *self.shape))

    def rows(self, indices: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        return torch.from_numpy(self.images[indices]), self.readable[indices]  # one copy, out of the page cache


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def open_or_build(samples: Sequence[tuple[str, int]], image_size: int, transform: EvalTransform, root: Path,
                  *, workers: int = 0, say=log.info) -> DecodedImages | None:
    """The decoded cache of ``samples`` under ``root``, built first if missing (one process
    per node builds; the others wait for it). None, with the reason said, when the disk
    has no room for it (evaluations then decode every image, as without a cache)."""
    key = cache_key(samples, image_size, transform)
    folder = root / "decoded" / key
    if (folder / "meta.json").is_file():
        return DecodedImages(folder, transform)
    need = len(samples) * transform.channels * image_size * image_size
    free = _free_bytes(root)
    if need + SPARE_BYTES > free:
        say(f"decoded cache: {len(samples):,} images need {need / 2**30:.1f} GiB but {root} has "
            f"{free / 2**30:.1f} GiB free; validating from the image files instead (set AUTOCOMPRESS_CACHE to a "
            "larger node-local disk to cache them)")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(folder) + ".lock"):
        if not (folder / "meta.json").is_file():  # nobody built it while we waited
            _build(samples, image_size, transform, folder, workers=workers, say=say)
    return DecodedImages(folder, transform)


CHUNK = 32  # images a loading process decodes and writes per item


class _Writer(torch.utils.data.Dataset):
    """Item k: decode, resize and crop images [k * CHUNK, (k + 1) * CHUNK) and write them
    straight into the cache file (the pixels never travel between processes); returns
    their positions and which were readable."""

    def __init__(self, samples, image_size, transform, path: Path):
        self.samples, self.image_size, self.transform, self.path = samples, image_size, transform, path
        self._images = None

    def __len__(self) -> int:
        return math.ceil(len(self.samples) / CHUNK)

    def __getitem__(self, chunk: int):
        if self._images is None:  # opened once per loading process
            self._images = np.memmap(self.path, dtype=np.uint8, mode="r+",
                                     shape=(len(self.samples), self.transform.channels, self.image_size,
                                            self.image_size))
        start = chunk * CHUNK
        stop = min(start + CHUNK, len(self.samples))
        readable = np.zeros(stop - start, dtype=bool)
        for offset, index in enumerate(range(start, stop)):
            path = self.samples[index][0]
            try:
                self._images[index] = geometry(path, self.image_size, self.transform)
                readable[offset] = True
            except Exception as error:  # an unreadable file: recorded, not fatal
                log.warning("skipping unreadable image %s: %s", path, error)
        return start, readable  # the rows are in the shared page cache; the builder fsyncs the file once


def _build(samples, image_size, transform, folder: Path, *, workers: int, say) -> None:
    count, shape = len(samples), (transform.channels, image_size, image_size)
    partial = folder / f"images.u8.partial-{os.getpid()}"
    say(f"decoded cache: decoding {count:,} validation images once into {folder} "
        f"({count * np.prod(shape) / 2**30:.1f} GiB)")
    start = time.perf_counter()
    np.memmap(partial, dtype=np.uint8, mode="w+", shape=(count, *shape)).flush()  # the file, at full size
    readable = np.zeros(count, dtype=bool)
    loader = torch.utils.data.DataLoader(_Writer(samples, image_size, transform, partial), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    try:
        for first, mask in loader:
            readable[first:first + len(mask)] = mask
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, folder / "images.u8")
        np.save(folder / "readable.npy", readable)
        meta = {"format": FORMAT, "count": count, "shape": list(shape), "labels": [int(l) for _, l in samples],
                "sources": [p for p, _ in samples], "seconds": time.perf_counter() - start}
        atomic_write_json(folder / "meta.json", meta)  # last: its presence says the cache is complete
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    say(f"decoded cache: {count:,} images in {seconds:.0f} s ({count / max(seconds, 1e-9):,.0f} images/s), "
        f"{int((~readable).sum())} unreadable")


def batches(decoded: DecodedImages, indices: Sequence[int], batch_size: int, device: torch.device
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]]:
    """``(images, labels, skipped, readable)`` batches as the loader gives them, read
    from the cache up to two batches ahead on a thread, normalised on ``device``."""
    indices = np.asarray(indices, dtype=np.int64)
    pin = device.type == "cuda"
    ahead: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            try:
                block, mask = decoded.rows(part)
                item = (block.pin_memory() if pin else block, mask, part)
            except BaseException as error:  # re-raised by the consumer
                item = error
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or isinstance(item, BaseException):
                return

    thread = threading.Thread(target=produce, daemon=True, name="decoded-cache-reader")
    thread.start()
    try:
        for _ in range(0, len(indices), batch_size):
            item = ahead.get()
            if isinstance(item, BaseException):
                raise item
            block, mask, part = item
            images = block.to(device, non_blocking=True)
            if not mask.all():
                images = images[torch.from_numpy(mask).to(device)]
            labels = torch.from_numpy(decoded.labels[part][mask])
            skipped = [decoded.sources[i] for i in part[~mask]]
            yield normalize(images, decoded.transform), labels, skipped, torch.from_numpy(mask)
    finally:
        stop.set()
