"""CIFAR-10 from a local folder (nothing is downloaded).

``data.root`` holds either the binary release ``cifar-10-batches-bin/`` (read
directly, preferred) or the Python release ``cifar-10-batches-py/``. The Python
release is a set of pickles; autocompress never unpickles a file a user could have
written, so those files are first checked against the official release's MD5 sums
(the ones torchvision checks) and then read with an unpickler that only admits
numpy arrays. Validation is the test batch; the calibration batch comes from the
first training batch.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from autocompress.data.bundle import DataBundle, Item, balanced_subset
from autocompress.data.transforms import PRESETS, EvalTransform
from autocompress.errors import DataError

RECORD_BYTES = 1 + 3 * 32 * 32
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise DataError(f"{path}: not a CIFAR-10 binary batch (size {raw.size} bytes is not a multiple of {RECORD_BYTES})")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{path}: not a CIFAR-10 binary batch (label {labels.max()} > 9)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    payload = path.read_bytes()
    digest = hashlib.md5(payload).hexdigest()
    if digest != OFFICIAL_MD5[path.name]:
        raise DataError(
            f"{path}: not the official CIFAR-10 Python release (MD5 {digest}); autocompress does not "
            "unpickle other files. Use the official archive, or the binary release (cifar-10-batches-bin)."
        )
    try:
        entry = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load()
        data, labels = entry[b"data"], entry[b"labels"]
    except Exception as error:
        raise DataError(f"{path}: cannot read this CIFAR-10 batch: {error}") from None
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _releases(root: Path) -> tuple[Path, Path]:
    """Where the binary and the Python release's test batch would be under ``root``."""
    return root / "cifar-10-batches-bin" / "test_batch.bin", root / "cifar-10-batches-py" / "test_batch"


def holds_cifar10(root: Path) -> bool:
    """Whether ``root`` holds a CIFAR-10 release this module reads."""
    return any(path.is_file() for path in _releases(root))


def _batch_reader(root: Path):
    """``read(name)`` for the release found under ``root``, or a DataError naming the layout."""
    binary_test, python_test = _releases(root)
    binary, python = binary_test.parent, python_test.parent
    if binary_test.is_file():
        return lambda name: _read_binary_batch(binary / f"{name}.bin")
    if python_test.is_file():
        return lambda name: _read_python_batch(python / name)
    raise DataError(
        f"data.root: no CIFAR-10 under {root}: expected {binary}/test_batch.bin (binary release) or "
        f"{python}/test_batch (Python release). Nothing is downloaded: unpack the archive there."
    )


class CIFARDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, image_size: int, transform: EvalTransform):
        self.images, self.labels, self.image_size, self.transform = images, labels, image_size, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        return to_tensor(self.images[index : index + 1], self.image_size, self.transform)[0], int(self.labels[index]), ""


def to_tensor(images: np.ndarray, image_size: int, transform: EvalTransform = PRESETS["cifar10"]) -> torch.Tensor:
    """[N, 3, 32, 32] uint8 -> normalised float, resized to ``floor(image_size / crop_fraction)``
    and center-cropped to ``image_size`` (no resize at 32 with crop fraction 1)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    scale = math.floor(image_size / transform.crop_fraction)
    if scale != 32:
        x = F.interpolate(x, size=(scale, scale), mode=transform.interpolation, align_corners=False, antialias=True)
    if scale != image_size:
        top = round((scale - image_size) / 2)
        x = x[:, :, top:top + image_size, top:top + image_size]
    mean, std = torch.tensor(transform.mean).view(1, -1, 1, 1), torch.tensor(transform.std).view(1, -1, 1, 1)
    return (x - mean) / std


def load_cifar10_bundle(root: Path, image_size: int, calibration_size: int, calibration_seed: int, limit: int | None,
                        transform: EvalTransform = PRESETS["cifar10"]) -> DataBundle:
    read = _batch_reader(root)
    test_x, test_y = read("test_batch")
    try:
        train_x, train_y = read("data_batch_1")
        source = "from the training split"
    except FileNotFoundError:
        # no training batch: take the calibration slice from the test batch and exclude it
        index = balanced_subset(test_y, calibration_size, calibration_seed)
        keep = np.setdiff1d(np.arange(len(test_y)), index)
        train_x, train_y, test_x, test_y = test_x[index], test_y[index], test_x[keep], test_y[keep]
        source = "sliced from the test split and excluded from validation"
    calib = balanced_subset(train_y, calibration_size, calibration_seed)
    if limit is not None:
        keep = balanced_subset(test_y, limit, calibration_seed)
        test_x, test_y = test_x[keep], test_y[keep]
    return DataBundle(
        validation=CIFARDataset(test_x, test_y, image_size, transform),
        calibration=to_tensor(train_x[calib], image_size, transform),
        calibration_labels=torch.from_numpy(train_y[calib]),
        calibration_sources=[f"train:{int(i)}" for i in calib],
        num_classes=10,
        description=f"cifar10 {root}: {len(test_y)} test images at {image_size}x{image_size}; calibration {len(calib)} {source}",
    )
