"""Evaluation transforms on PIL images, without torchvision.

torchvision's compiled extension does not load with PyTorch's CPU build (and no CPU
torchvision wheel exists), so timm's evaluation transform is done here with Pillow and
torch, as timm computes it: resize the shorter side to ``floor(size / crop_fraction)``
(the longer side truncated, as torchvision's ``Resize`` does), center-crop ``size``,
scale to [0, 1], normalise. The crop fraction, interpolation and mean/std come from
the spec (``data.transform``), with presets for the official evaluation configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from autocompress.vocabulary import DATASETS, TRANSFORM_PRESETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
FASHION_MNIST_MEAN = (0.2860,)  # of the 60,000 training images, scaled to [0, 1]
FASHION_MNIST_STD = (0.3530,)
INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@dataclass(frozen=True)
class EvalTransform:
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def channels(self) -> int:
        """Channels of the images it makes: one mean/std value each (1: grayscale, 3: RGB)."""
        return len(self.mean)

    @property
    def mode(self) -> str:
        """The Pillow mode images are converted to before the geometry: 'L' or 'RGB'."""
        return "L" if self.channels == 1 else "RGB"


# The evaluation settings of the official training configs (timm's crop_pct, interpolation, mean, std).
PRESETS = {
    "timm_default": EvalTransform(),  # timm's ImageNet default, and autocompress's before presets
    "spikformer_imagenet": EvalTransform(1.0, "bicubic"),  # ZK-Zhou/spikformer imagenet/imagenet.yml
    "sdt_imagenet": EvalTransform(0.95, "bicubic"),  # BICLab/Spike-Driven-Transformer conf/imagenet/*.yml
    "cifar10": EvalTransform(1.0, "bicubic", CIFAR10_MEAN, CIFAR10_STD),  # both repositories' CIFAR-10 configs
    "cifar100": EvalTransform(1.0, "bicubic", CIFAR100_MEAN, CIFAR100_STD),  # SDT conf/cifar100/*.yml
    "fashion_mnist": EvalTransform(1.0, "bilinear", FASHION_MNIST_MEAN, FASHION_MNIST_STD),  # the fmnist reference's
}


assert tuple(PRESETS) == TRANSFORM_PRESETS, "vocabulary.TRANSFORM_PRESETS names these presets"


def resolve_transform(settings, dataset: str) -> EvalTransform:
    """The transform a spec's ``data.transform`` describes: its preset (the data set's
    default when unset), with the fields it sets overriding the preset's."""
    base = PRESETS[settings.preset or DATASETS[dataset].default_preset or "timm_default"]
    return EvalTransform(
        crop_fraction=settings.crop_fraction if settings.crop_fraction is not None else base.crop_fraction,
        interpolation=settings.interpolation or base.interpolation,
        mean=tuple(settings.mean) if settings.mean is not None else base.mean,
        std=tuple(settings.std) if settings.std is not None else base.std,
    )


def resize_shorter(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    width, height = image.size
    if width <= height:
        new_w, new_h = size, max(1, int(height * size / width))
    else:
        new_w, new_h = max(1, int(width * size / height)), size
    return image.resize((new_w, new_h), INTERPOLATION[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = round((width - size) / 2), round((height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, C], or [H, W] for grayscale
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return (tensor - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def evaluation_transform(image: Image.Image, size: int, transform: EvalTransform = EvalTransform()) -> torch.Tensor:
    """The evaluation transform: convert to the transform's mode (RGB, or grayscale for one
    mean/std value), resize, center crop, normalise -> [C, size, size]."""
    image = image.convert(transform.mode)
    image = center_crop(resize_shorter(image, math.floor(size / transform.crop_fraction), transform.interpolation), size)
    return to_normalized_tensor(image, transform.mean, transform.std)
