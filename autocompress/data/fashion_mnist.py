"""Fashion-MNIST (Zalando, 2017) from its four IDX files in a local folder.

60,000 training and 10,000 test images, 28x28 grayscale, 10 classes in the data set's
own label order (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker,
Bag, Ankle boot). ``data.root`` defaults to the folder Debian's ``dataset-fashion-mnist``
package installs; the files may be gzipped (as published) or not. Every file is checked
before use (magic number, dimensions, counts, length, label range) and a missing or
damaged one is refused with its name and where to get it.

The test split is the validation set; the calibration batch comes from the training
split. Each image goes through the evaluation transform of image folders (Pillow's
resize and center crop of a grayscale image, scaled to [0, 1], normalised with the
transform's mean and std; the preset ``fashion_mnist`` is the training split's 0.2860 /
0.3530), so a folder of the same images as PNGs gives the same tensors, bit for bit.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autocompress.data.bundle import DataBundle, TensorImageDataset, balanced_subset, log
from autocompress.data.transforms import PRESETS, EvalTransform, evaluation_transform
from autocompress.errors import DataError
from autocompress.vocabulary import DATASETS, FASHION_MNIST_HOW_TO_GET as HOW_TO_GET

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = DATASETS["fashion_mnist"].classes
SIDE = 28
SPLITS = {  # split -> (images file, labels file, the published count)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions


def _present(root: Path, stem: str) -> Path | None:
    return next((root / name for name in (f"{stem}.gz", stem) if (root / name).is_file()), None)


def holds_fashion_mnist(root: Path) -> bool:
    """Whether ``root`` holds Fashion-MNIST's test images (the validation set this module reads)."""
    return _present(root, SPLITS["test"][0]) is not None


def _find(root: Path, stem: str) -> Path:
    found = _present(root, stem)
    if found is not None:
        return found
    raise DataError(f"data.root: {root / stem}.gz (or {stem}) not found; Fashion-MNIST needs its four IDX files: "
                    f"{HOW_TO_GET}")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot be read as a Fashion-MNIST IDX file ({error}); it may be truncated or "
                        f"damaged: {HOW_TO_GET}") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file, after checking its magic number, dimensions and
    length."""
    payload = _read_bytes(path)
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(payload) < header:
        raise DataError(f"{path}: {len(payload)} bytes, shorter than an IDX header; the file is truncated: {HOW_TO_GET}")
    found = struct.unpack(">I", payload[:4])[0]
    if found != magic:
        raise DataError(f"{path}: magic number {found}, expected {magic} "
                        f"({'images' if magic == IMAGES_MAGIC else 'labels'}); not a Fashion-MNIST IDX file")
    shape = struct.unpack(f">{dims}I", payload[4:header])
    if dims == 3 and shape[1:] != (SIDE, SIDE):
        raise DataError(f"{path}: images of {shape[1]}x{shape[2]}, expected {SIDE}x{SIDE}")
    size = int(np.prod(shape))
    if len(payload) - header < size:
        raise DataError(f"{path}: truncated: {len(payload) - header:,} bytes of data for {shape[0]:,} items that need "
                        f"{size:,}: {HOW_TO_GET}")
    if len(payload) - header > size:
        raise DataError(f"{path}: {len(payload) - header - size:,} bytes past the {shape[0]:,} items its header "
                        "announces; not a Fashion-MNIST IDX file")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape).copy()


@functools.lru_cache(maxsize=4)
def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n, 28, 28] uint8, labels [n] int64)`` of one split, checked. A count other
    than the published one is read (a subset of one's own), and logged."""
    images_stem, labels_stem, published = SPLITS[split]
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; Fashion-MNIST is read from its four IDX files: {HOW_TO_GET}")
    images_path, labels_path = _find(root, images_stem), _find(root, labels_stem)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{root}: {images_path.name} holds {len(images):,} images but {labels_path.name} "
                        f"{len(labels):,} labels; the two files of a split must match (the published {split} split "
                        f"has {published:,} of each): {HOW_TO_GET}")
    if len(images) != published:
        log.info("%s: %s split of %d images, not the published %d", root, split, len(images), published)
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"{_find(root, labels_stem)}: label {int(labels.max())} out of range 0-{NUM_CLASSES - 1}; "
                        "not Fashion-MNIST")
    return images, labels.astype(np.int64)


def to_tensor(images: np.ndarray, image_size: int, transform: EvalTransform = PRESETS["fashion_mnist"]) -> torch.Tensor:
    """[N, 28, 28] uint8 -> [N, C, s, s] float by the image folders' evaluation transform (a
    grayscale image, resized and cropped by Pillow, normalised; C is the transform's channels)."""
    if len(images) == 0:
        return torch.zeros(0, transform.channels, image_size, image_size)
    return torch.stack([evaluation_transform(Image.fromarray(image, mode="L"), image_size, transform)
                        for image in images])


def load_fashion_mnist_bundle(root: Path, image_size: int, calibration_size: int, calibration_seed: int,
                              limit: int | None, transform: EvalTransform = PRESETS["fashion_mnist"]) -> DataBundle:
    test_x, test_y = read_split(root, "test")
    train_x, train_y = read_split(root, "train")
    if calibration_size > len(train_y):
        raise DataError(f"data.calibration.size: {calibration_size} exceeds the {len(train_y):,} Fashion-MNIST "
                        "training images; use at most that")
    calib = balanced_subset(train_y, calibration_size, calibration_seed)
    if limit is not None:
        keep = balanced_subset(test_y, limit, calibration_seed)
        test_x, test_y = test_x[keep], test_y[keep]
    return DataBundle(
        validation=TensorImageDataset(to_tensor(test_x, image_size, transform), torch.from_numpy(test_y)),
        calibration=to_tensor(train_x[calib], image_size, transform),
        calibration_labels=torch.from_numpy(train_y[calib]),
        calibration_sources=[f"train:{int(i)}" for i in calib],
        num_classes=NUM_CLASSES,
        description=f"fashion_mnist {root}: {len(test_y):,} test images at {image_size}x{image_size}; "
                    f"calibration {len(calib)} from the training split",
    )
