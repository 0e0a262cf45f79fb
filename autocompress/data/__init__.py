"""Validation data and calibration batches for the spec's data set."""

from __future__ import annotations

from autocompress.data._common import DataBundle, balanced_subset, collate_skipping

__all__ = ["DataBundle", "balanced_subset", "collate_skipping", "load_data"]


def load_data(data, model_classes: int | None = None) -> DataBundle:
    """The :class:`DataBundle` for a validated ``spec.data``; ``model_classes`` (the model's
    outputs) lets ``class_index: auto`` number a subset of ImageNet's folders as ImageNet does."""
    calibration = data.calibration
    if data.dataset == "digits":
        from autocompress.data.digits import load_digits_bundle

        return load_digits_bundle(data.image_size, calibration.size, calibration.seed, data.validation.limit)
    if data.dataset == "imagefolder":
        from autocompress.data.imagefolder import load_imagefolder_bundle

        return load_imagefolder_bundle(
            data.root, data.image_size, calibration.size, calibration.seed, data.validation.limit, calibration.root,
            data.transform.resolve(data.dataset), data.class_index, model_classes,
        )
    if data.dataset == "cifar10":
        from autocompress.data.cifar10 import load_cifar10_bundle

        return load_cifar10_bundle(data.root, data.image_size, calibration.size, calibration.seed, data.validation.limit,
                                   data.transform.resolve(data.dataset))
    raise ValueError(f"unknown dataset {data.dataset!r}")  # unreachable: the spec validates it
