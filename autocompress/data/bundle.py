"""What every data set hands the evaluator and the proxy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

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
    # where each calibration image came from: files of an image folder; for the built-in sets, the
    # training split's item numbers ("train:1234")
    calibration_sources: list[str] = field(default_factory=list)

    _loaders: dict = field(default_factory=dict, repr=False, compare=False)
    decoded: object = field(default=None, repr=False, compare=False)  # autocompress.data.decoded.DecodedImages

    def use_decoded_cache(self, root, *, workers: int = 0, say=log.info) -> bool:
        """Read the validation images from the node's decoded cache under ``root`` (built
        now if missing). False when the data set has none (in-memory sets need none) or
        the disk has no room for it."""
        cacheable = getattr(self.validation, "cacheable", None)
        if cacheable is None:
            return False
        if self.decoded is None:
            from autocompress.data.decoded import open_or_build

            self.decoded = open_or_build(*cacheable, root, workers=workers, say=say)
        return self.decoded is not None

    def validation_batches(self, batch_size: int, workers: int, device: torch.device,
                           indices: Sequence[int] | None = None):
        """``(images, labels, skipped_sources, readable)`` batches over ``indices`` (all
        items by default): from the decoded cache when in use (images normalised on
        ``device``), else through the loader (images on the CPU, pinned for CUDA)."""
        if self.decoded is not None:
            from autocompress.data.decoded import batches

            positions = np.arange(len(self.validation)) if indices is None else indices
            return batches(self.decoded, positions, batch_size, device)
        return iter(self.validation_loader(batch_size, workers, pin_memory=device.type == "cuda", indices=indices))

    def validation_sources(self, indices: Sequence[int]) -> list[str] | None:
        """The files of the validation items ``indices`` (None for an in-memory set, whose
        items are named by their numbers)."""
        samples = getattr(self.validation, "samples", None)
        return None if samples is None else [samples[int(i)][0] for i in indices]

    def validation_labels(self) -> np.ndarray:
        """The label of every validation item, in item order: the data set's ``labels``
        (the built-in sets have them, read without decoding an image), else every item."""
        labels = getattr(self.validation, "labels", None)
        if labels is None:
            return np.asarray([self.validation[i][1] for i in range(len(self.validation))], dtype=np.int64)
        return np.asarray(labels, dtype=np.int64)

    def validation_loader(self, batch_size: int, workers: int = 0, *, pin_memory: bool = False,
                          indices: Sequence[int] | None = None) -> DataLoader:
        """Batches of ``(images, labels, skipped_sources, readable)`` over the items
        ``indices`` (all of them, in item order, by default). One loader per setting, kept:
        its worker processes persist from one evaluation to the next instead of being forked
        again for each (a search evaluates many candidates, shard by shard, on the same data)."""
        key = (batch_size, workers, pin_memory)
        if key not in self._loaders:
            self._loaders[key] = DataLoader(
                self.validation,
                batch_size=batch_size,
                sampler=Positions(len(self.validation)),
                num_workers=workers,
                collate_fn=collate_skipping,
                persistent_workers=workers > 0,
                pin_memory=pin_memory,
            )
        loader = self._loaders[key]
        loader.sampler.select(indices)
        return loader


class Positions(Sampler):
    """The items an evaluation reads, in its order; set before each pass (:meth:`select`)
    so that one loader, and its persistent workers, serves every shard."""

    def __init__(self, size: int):
        self.size = size
        self.indices: Sequence[int] = range(size)

    def select(self, indices: Sequence[int] | None) -> None:
        self.indices = range(self.size) if indices is None else [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TensorImageDataset(Dataset):
    """In-memory images and labels as validation items."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        return self.images[index], int(self.labels[index]), ""


def collate_skipping(items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """Stack the readable images of a batch; report the unreadable ones by source, and
    which items of the batch were readable (a bool mask over the batch's items)."""
    kept = [(image, label) for image, label, _ in items if image is not None]
    skipped = [source for image, _, source in items if image is None]
    readable = torch.tensor([image is not None for image, _, _ in items], dtype=torch.bool)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped, readable
    images = torch.stack([image for image, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.long)
    return images, labels, skipped, readable


def stratified_order(labels: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of all items in which every prefix holds the classes in nearly
    their overall proportions: each class is shuffled, then the classes are interleaved
    by their items' evenly spaced ranks (item j of a class of n sits at (j + u) / n, u a
    seeded offset per class). A prefix of it is a class-stratified random sample, so a
    validation stopped early has seen a fair share of every class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    items = np.empty(len(labels), dtype=np.int64)
    at = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        keys[at:at + n] = (np.arange(n) + rng.random()) / n
        items[at:at + n] = members
        at += n
    return items[np.lexsort((items, keys))]


def holdout_split(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the items into a selection part and a held-out part, class by class: each
    class gives round(fraction * n) of its n items (seeded), at least one to each part
    where it has two or more. Both index arrays come back sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        take = int(round(fraction * n))
        if n >= 2:
            take = min(max(take, 1), n - 1)
        held.append(members[:take])
    mask = np.zeros(len(labels), dtype=bool)
    if held:
        mask[np.concatenate(held)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


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
