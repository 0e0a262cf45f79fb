"""Evaluation transforms on PIL images, without torchvision.

torchvision's compiled extension does not load with PyTorch's CPU build (and no CPU
torchvision wheel exists), so the standard ImageNet evaluation transform is done here
with Pillow and torch: resize the shorter side to ``size / crop_fraction`` (bilinear,
as torchvision's PIL path does), center-crop ``size``, scale to [0, 1], normalise.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width <= height:
        new_w, new_h = size, max(1, round(height * size / width))
    else:
        new_w, new_h = max(1, round(width * size / height)), size
    return image.resize((new_w, new_h), Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = round((width - size) / 2), round((height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, C]
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return (tensor - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def evaluation_transform(image: Image.Image, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """The standard evaluation transform: resize, center crop, normalise -> [3, size, size]."""
    image = image.convert("RGB")
    image = center_crop(resize_shorter(image, round(size / CROP_FRACTION)), size)
    return to_normalized_tensor(image, mean, std)
