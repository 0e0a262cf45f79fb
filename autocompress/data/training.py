"""Training data for recovery fine-tuning (``autocompress finetune``), with the usual
training augmentation of each data set:

- digits: its bundled training split (1,437 images; the validation set is the test
  split), random shifts of up to one pixel (what the reference model was trained with);
- fashion_mnist: the 60,000 training images of ``data.root``, random shifts of up to one
  pixel and horizontal flips (the reference model's recipe);
- cifar10: the five training batches under ``finetune.data.root`` (default
  ``data.root``), random 32x32 crops of the image padded by 4 pixels and horizontal
  flips (the CIFAR recipe of the official Spikformer code), then the evaluation
  transform's resize and normalisation;
- imagefolder: the training folder ``finetune.data.root`` (ImageNet's train layout,
  ``root/<class>/<image>``) with the validation set's class numbering, a random resized
  crop (scale 0.08-1, aspect 3/4-4/3, torchvision's algorithm) and horizontal flips,
  normalised like the validation images.

Items are ``(image, label)``; an unreadable training image is skipped with a warning
(the batch is one image shorter), never fatal: one bad JPEG among 1.28 million must
not end a day of training.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from autocompress.data.transforms import INTERPOLATION, resolve_transform, to_normalized_tensor
from autocompress.errors import DataError

log = logging.getLogger("autocompress.data")


def shift_and_flip(batch: torch.Tensor, max_shift: int, generator: torch.Generator | None = None, flip: bool = False,
                   background: float | None = None) -> torch.Tensor:
    """The small-image augmentation (the reference models' recipes, fine-tuning on digits
    and Fashion-MNIST): each image of ``batch`` [N, C, H, W] translated by up to
    ``max_shift`` pixels, padded with ``background`` (default: the batch's smallest value),
    and with ``flip`` mirrored with probability 1/2; drawn from ``generator`` (default:
    torch's global generator)."""
    if max_shift > 0:
        size = batch.shape[-1]
        fill = float(batch.min()) if background is None else background
        padded = F.pad(batch, [max_shift] * 4, value=fill)
        offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=generator)
        shifted = torch.empty_like(batch)
        # one slice per distinct offset ((2s+1)^2 of them), not one per image
        for dy, dx in offsets.unique(dim=0).tolist():
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().squeeze(1)
            shifted[rows] = padded[rows, :, dy: dy + size, dx: dx + size]
        batch = shifted
    if flip:
        mirrored = torch.rand(len(batch), generator=generator) < 0.5
        batch = torch.where(mirrored.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return batch


class _Tensors(Dataset):
    """In-memory training images: random one-pixel shifts (background padding), and
    horizontal flips with ``flip``, when augmenting (:func:`shift_and_flip`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool, flip: bool = False):
        self.images, self.labels, self.augment, self.flip = images, labels, augment, flip
        self.background = float(images.min()) if len(images) else 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.augment:
            image = shift_and_flip(image[None], 1, flip=self.flip, background=self.background)[0]
        return image, int(self.labels[index])


class _CIFAR(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, image_size: int, transform, augment: bool):
        self.images, self.labels, self.image_size, self.transform, self.augment = (
            images, labels, image_size, transform, augment)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from autocompress.data.cifar10 import to_tensor

        image = self.images[index]  # [3, 32, 32] uint8
        if self.augment:
            padded = np.pad(image, ((0, 0), (4, 4), (4, 4)), mode="constant")
            dy, dx = random.randint(0, 8), random.randint(0, 8)
            image = padded[:, dy:dy + 32, dx:dx + 32]
            if random.random() < 0.5:
                image = image[:, :, ::-1]
        return to_tensor(image[None], self.image_size, self.transform)[0], int(self.labels[index])


def random_resized_crop(image: Image.Image, size: int, interpolation: str,
                        scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
    """torchvision's ``RandomResizedCrop``: ten tries at a random area and aspect ratio,
    else the central crop at the nearest allowed ratio; resized to ``size`` x ``size``."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            break
    else:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            w, h = int(round(height * ratio[1])), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), INTERPOLATION[interpolation], box=(left, top, left + w, top + h))


class _ImageFolder(Dataset):
    def __init__(self, samples: list[tuple[str, int]], image_size: int, transform, augment: bool):
        self.samples, self.image_size, self.transform, self.augment = samples, image_size, transform, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from autocompress.data.transforms import evaluation_transform

        path, label = self.samples[index]
        try:
            with Image.open(path) as opened:
                image = opened.convert(self.transform.mode)
                if not self.augment:
                    return evaluation_transform(image, self.image_size, self.transform), label
                image = random_resized_crop(image, self.image_size, self.transform.interpolation)
                if random.random() < 0.5:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
                return to_normalized_tensor(image, self.transform.mean, self.transform.std), label
        except Exception as error:  # PIL raises many kinds for a broken file
            log.warning("skipping unreadable training image %s: %s", path, error)
            return None


def collate(items):
    """Stack the readable items of a batch (unreadable ones are None)."""
    items = [item for item in items if item is not None]
    if not items:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items], dtype=torch.long)


def training_set(spec, *, model_classes: int | None = None) -> Dataset:
    """The fine-tuning training set of ``spec`` (its ``data`` and ``finetune.data`` sections)."""
    data, settings = spec.data, spec.finetune.data
    if data.dataset == "digits":
        from autocompress.data.digits import digits_split

        images, labels, _, _ = digits_split(data.image_size)
        return _Tensors(images, labels, settings.augment)
    transform = resolve_transform(data.transform, data.dataset)
    if data.dataset == "fashion_mnist":
        from autocompress.data.fashion_mnist import read_split, to_tensor

        images, labels = read_split(Path(settings.root or data.root), "train")
        return _Tensors(to_tensor(images, data.image_size, transform), torch.from_numpy(labels), settings.augment,
                        flip=True)
    if data.dataset == "cifar10":
        from autocompress.data.cifar10 import _batch_reader

        root = Path(settings.root or data.root)
        read = _batch_reader(root)
        parts = []
        for i in range(1, 6):
            try:
                parts.append(read(f"data_batch_{i}"))
            except FileNotFoundError:
                pass
        if not parts:
            raise DataError(f"finetune.data.root: no CIFAR-10 training batch (data_batch_1 ... data_batch_5) under "
                            f"{root}; fine-tuning trains on them (unpack the whole archive there)")
        images = np.concatenate([x for x, _ in parts])
        labels = np.concatenate([y for _, y in parts])
        return _CIFAR(images, labels, data.image_size, transform, settings.augment)
    if data.dataset == "imagefolder":
        from autocompress.data.imagefolder import class_names, scan_image_folder

        if settings.root is None:
            raise DataError("finetune.data.root is not set: fine-tuning on an imagefolder data set needs the training "
                            "folder (root/<class>/<image>, ImageNet's train layout); set it in the spec's finetune "
                            "section or with --set finetune.data.root=/data/imagenet/train")
        classes = class_names(Path(data.root), data.class_index, model_classes, data.classes) or \
            scan_image_folder(Path(data.root))[0]
        found = sorted(entry.name for entry in Path(settings.root).iterdir()
                       if entry.is_dir() and not entry.name.startswith("."))
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"finetune.data.root {settings.root}: class folders the validation set does not have: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; the training folder must "
                            "use the validation folder's class names")
        _, samples = scan_image_folder(Path(settings.root), classes, strict=False, where="finetune.data.root")
        return _ImageFolder(samples, data.image_size, transform, settings.augment)
    raise DataError(f"fine-tuning has no training data for data set {data.dataset!r}")
