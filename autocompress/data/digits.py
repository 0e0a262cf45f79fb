"""scikit-learn's bundled handwritten digits: the embedded default data set.

1,797 real 8x8 grey-scale images (values 0..16) of 10 classes, shipped inside
scikit-learn, so nothing is downloaded. They are split 80/20 into train and test
with a fixed, stratified, seeded split, scaled to [0, 1], resized (bilinear) to the
spec's image size and normalised with the train split's mean and std.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.data.bundle import DataBundle, TensorImageDataset, balanced_subset
from autocompress.errors import DataError
from autocompress.vocabulary import DATASETS

SPLIT_SEED = 0
TEST_FRACTION = 0.2
NUM_CLASSES = DATASETS["digits"].classes


@functools.lru_cache(maxsize=4)
def digits_split(image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_images, train_labels, test_images, test_labels)``, images [n, 1, s, s]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target
    )

    def prepare(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x).unsqueeze(1)
        if image_size != t.shape[-1]:
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return t

    train, test = prepare(train_x), prepare(test_x)
    mean, std = train.mean(), train.std()
    train, test = (train - mean) / std, (test - mean) / std
    return train, torch.from_numpy(train_y).long(), test, torch.from_numpy(test_y).long()


def load_digits_bundle(image_size: int, calibration_size: int, calibration_seed: int, limit: int | None) -> DataBundle:
    train_x, train_y, test_x, test_y = digits_split(image_size)
    if calibration_size > len(train_y):
        raise DataError(f"data.calibration.size: {calibration_size} exceeds the {len(train_y)} digits training images; use at most that")
    calib = balanced_subset(train_y.numpy(), calibration_size, calibration_seed)
    if limit is not None:
        keep = torch.from_numpy(balanced_subset(test_y.numpy(), limit, calibration_seed))
        test_x, test_y = test_x[keep], test_y[keep]
    return DataBundle(
        validation=TensorImageDataset(test_x, test_y),
        calibration=train_x[torch.from_numpy(calib)].clone(),
        calibration_labels=train_y[torch.from_numpy(calib)].clone(),
        calibration_sources=[f"train:{int(i)}" for i in calib],
        num_classes=NUM_CLASSES,
        description=f"digits (scikit-learn): {len(test_y)} test images at {image_size}x{image_size}, calibration {len(calib)} from train",
    )
