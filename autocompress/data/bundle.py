"""What every data set hands the evaluator and the proxy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger("autocompress.data")

# One item of a validation set: the image (None when the file could not be read),
# its label, and where it came from ("" for in-memory data sets).
Item = tuple[torch.Tensor | None, int, str]


@dataclass
class DataBundle:
    """The validation set and the calibration batch of one spec.

    The calibration images never appear in the validation set.
    """

    validation: Dataset
    calibration: torch.Tensor  # [n, C, H, W], float32
    calibration_labels: torch.Tensor  # [n], int64
    num_classes: int
    description: str
    notes: list[str] = field(default_factory=list)

    _loaders: dict = field(default_factory=dict, repr=False, compare=False)

    def validation_loader(self, batch_size: int, workers: int = 0, *, pin_memory: bool = False) -> DataLoader:
        """Batches of ``(images, labels, skipped_sources)`` in a fixed order. One loader per
        setting, kept: its worker processes persist from one evaluation to the next instead of
        being forked again for each (a search evaluates many candidates on the same data)."""
        key = (batch_size, workers, pin_memory)
        if key not in self._loaders:
            self._loaders[key] = DataLoader(
                self.validation,
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                collate_fn=collate_skipping,
                persistent_workers=workers > 0,
                pin_memory=pin_memory,
            )
        return self._loaders[key]


class TensorImageDataset(Dataset):
    """In-memory images and labels as validation items."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        return self.images[index], int(self.labels[index]), ""


def collate_skipping(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack the readable images of a batch; report the unreadable ones by source."""
    kept = [(image, label) for image, label, _ in items if image is not None]
    skipped = [source for image, _, source in items if image is None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images = torch.stack([image for image, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.long)
    return images, labels, skipped


def balanced_subset(labels: Sequence[int] | np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` items, spread evenly over the classes, seeded.

    Classes take turns (in a seeded order) so that the counts per class differ by at
    most one where the classes are large enough. The indices come back sorted.
    """
    labels = np.asarray(labels)
    if limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    chosen: list[int] = []
    classes = list(pools)
    while len(chosen) < limit:
        for c in classes:
            if pools[c] and len(chosen) < limit:
                chosen.append(int(pools[c].pop()))
    return np.sort(np.asarray(chosen, dtype=np.int64))
