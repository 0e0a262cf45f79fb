"""Validation data and calibration batches for the spec's data set.

Each data set is one loader in :data:`LOADERS`, keyed by the names in
:data:`autocompress.vocabulary.DATASETS`; its module is imported when it is used.
"""

from __future__ import annotations

from typing import Callable

from autocompress.data.bundle import (
    DataBundle,
    TensorImageDataset,
    balanced_subset,
    collate_skipping,
    holdout_split,
    stratified_order,
)
from autocompress.data.digits import digits_split
from autocompress.data.transforms import EvalTransform, resolve_transform
from autocompress.vocabulary import DATASETS

__all__ = ["LOADERS", "DataBundle", "EvalTransform", "TensorImageDataset", "balanced_subset",
           "collate_skipping", "digits_split", "holdout_split", "load_data", "resolve_transform", "stratified_order"]


def _digits(data, model_classes):
    from autocompress.data.digits import load_digits_bundle

    return load_digits_bundle(data.image_size, data.calibration.size, data.calibration.seed, data.validation.limit)


def _imagefolder(data, model_classes):
    from autocompress.data.imagefolder import load_imagefolder_bundle

    return load_imagefolder_bundle(
        data.root, data.image_size, data.calibration.size, data.calibration.seed, data.validation.limit,
        data.calibration.root, resolve_transform(data.transform, data.dataset), data.class_index, model_classes,
        data.classes,
    )


def _cifar10(data, model_classes):
    from autocompress.data.cifar10 import load_cifar10_bundle

    return load_cifar10_bundle(data.root, data.image_size, data.calibration.size, data.calibration.seed,
                               data.validation.limit, resolve_transform(data.transform, data.dataset))


def _fashion_mnist(data, model_classes):
    from autocompress.data.fashion_mnist import load_fashion_mnist_bundle

    return load_fashion_mnist_bundle(data.root, data.image_size, data.calibration.size, data.calibration.seed,
                                     data.validation.limit, resolve_transform(data.transform, data.dataset))


LOADERS: dict[str, Callable] = {"digits": _digits, "imagefolder": _imagefolder, "cifar10": _cifar10,
                                "fashion_mnist": _fashion_mnist}
assert set(LOADERS) == set(DATASETS), "every data set of the vocabulary has a loader"


def load_data(data, model_classes: int | None = None) -> DataBundle:
    """The :class:`DataBundle` for a validated ``spec.data``; ``model_classes`` (the model's
    outputs) lets ``class_index: auto`` number a subset of ImageNet's folders as ImageNet does."""
    return LOADERS[data.dataset](data, model_classes)
