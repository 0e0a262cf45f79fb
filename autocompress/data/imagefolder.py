"""Image folders in the ImageNet validation layout: ``root/<class>/<image>``.

Classes are numbered by the order the spec gives (``data.classes`` or
``data.classes_file``: label i is the i-th name, as the model was trained); else the
sub-folder names in sorted order (as torchvision's ImageFolder numbers them); or, when
the folders are ImageNet-1k synset ids (``n01440764`` ...), ImageNet-1k's own label
numbers, so that a folder holding some of the 1,000 classes keeps the labels a 1,000-way
model was trained with (``data.class_index``). Images are read as RGB, or as grayscale
for a transform with one mean/std value (a 1-channel model). Unreadable
images are reported by file name, skipped, and counted in the evaluation result; they
never stop an evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from autocompress.data.bundle import DataBundle, Item, balanced_subset, log
from autocompress.data.transforms import EvalTransform, evaluation_transform
from autocompress.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jpe")


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's 1,000 synset ids in label order (label i is the i-th; they are sorted),
    as timm lists them (timm/data/_info/imagenet_synsets.txt)."""
    return (Path(__file__).with_name("imagenet_wnids.txt")).read_text().split()


def class_names(root: Path, class_index: str, model_classes: int | None = None,
                given: list[str] | None = None) -> list[str] | None:
    """The class list to number ``root``'s folders by: the spec's (``given``), ImageNet-1k's,
    or None (the sorted folders).

    ``auto`` takes ImageNet-1k's numbering where it differs and matters: every folder is an
    ImageNet-1k synset id, there are fewer than 1,000 of them, and the model has 1,000
    outputs (a model trained on a 100-class ImageNet subset keeps the folder numbering)."""
    if given is not None:
        return list(given)
    if class_index == "folders" or not root.is_dir():
        return None
    wnids = imagenet_wnids()
    known = set(wnids)
    found = [entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    strangers = sorted(name for name in found if name not in known)
    if class_index == "imagenet":
        if strangers:
            raise DataError(f"data.class_index is imagenet, but {len(strangers)} class folders of {root} are not "
                            f"ImageNet-1k synset ids: {', '.join(strangers[:5])}")
        return wnids
    subset = bool(found) and not strangers and len(found) < len(wnids)
    return wnids if subset and model_classes == len(wnids) else None


def scan_image_folder(root: Path, classes: list[str] | None = None, *, strict: bool = True,
                      where: str = "data.root") -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, samples)`` of an image folder; samples are ``(path, class_index)``. With
    ``classes`` (an order the spec gives, or ImageNet-1k's) a class folder not in it is an
    error (``strict``: its images would otherwise be left out without a word), or skipped
    (a calibration or training folder may hold more classes than the validation set)."""
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; give the validation folder (root/<class>/<image>)")
    found = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise DataError(
            f"data.root: {root} has no class sub-folders; the expected layout is root/<class>/<image> "
            "(ImageNet's validation set sorted into one folder per class)"
        )
    derived = classes is None
    classes = classes or found
    index = {name: i for i, name in enumerate(classes)}
    strangers = [name for name in found if name not in index]
    if strangers and strict:
        shown = ", ".join(strangers[:5]) + (f" (and {len(strangers) - 5} more)" if len(strangers) > 5 else "")
        raise DataError(f"{where}: {len(strangers)} class folder{'s' if len(strangers) > 1 else ''} of {root} "
                        f"{'are' if len(strangers) > 1 else 'is'} not in the class list ({len(classes)} names): "
                        f"{shown}; add {'them' if len(strangers) > 1 else 'it'} to data.classes in label order, or "
                        "remove the folder")
    samples = [
        (str(path), index[name])
        for name in found if name in index
        for path in sorted((root / name).iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not samples:
        raise DataError(f"data.root: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/")
    if derived:
        # class i is the i-th folder in sorted order: an empty folder would shift every label after it
        counts = np.bincount([label for _, label in samples], minlength=len(classes))
        empty = [name for name, count in zip(classes, counts) if count == 0]
        if empty:
            shown = ", ".join(empty[:5]) + (f" (and {len(empty) - 5} more)" if len(empty) > 5 else "")
            raise DataError(
                f"data.root: {len(empty)} class folder{'s' if len(empty) > 1 else ''} of {root} "
                f"{'hold' if len(empty) > 1 else 'holds'} no images: "
                f"{shown}. Classes are numbered by the sorted folder names, so an empty folder shifts the labels "
                "of the classes after it; remove it, or add its images")
    return classes, samples


def read_image(path: str, image_size: int, transform: EvalTransform) -> torch.Tensor | None:
    """The transformed image, or None (logged with the file name) when it cannot be read."""
    try:
        with Image.open(path) as image:
            return evaluation_transform(image, image_size, transform)
    except Exception as error:  # PIL raises many kinds for a broken file
        log.warning("skipping unreadable image %s: %s", path, error)
        return None


class ImageFolderDataset(Dataset):
    def __init__(self, samples: list[tuple[str, int]], image_size: int, transform: EvalTransform):
        self.samples, self.image_size, self.transform = samples, image_size, transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def cacheable(self) -> tuple:
        """What autocompress.data.decoded caches these images by."""
        return self.samples, self.image_size, self.transform

    def __getitem__(self, index: int) -> Item:
        path, label = self.samples[index]
        return read_image(path, self.image_size, self.transform), label, path


def _load_batch(samples: list[tuple[str, int]], image_size: int,
                transform: EvalTransform) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, labels, skipped = [], [], []
    for path, label in samples:
        image = read_image(path, image_size, transform)
        if image is None:
            skipped.append(path)
        else:
            images.append(image)
            labels.append(label)
    if not images:
        raise DataError("no calibration image could be read; see the warnings above for the files")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), skipped


def load_imagefolder_bundle(
    root: Path, image_size: int, calibration_size: int, calibration_seed: int,
    limit: int | None, calibration_root: Path | None = None, transform: EvalTransform = EvalTransform(),
    class_index: str = "auto", model_classes: int | None = None, given_classes: list[str] | None = None,
) -> DataBundle:
    imagenet = class_names(root, class_index, model_classes) if given_classes is None else None
    classes, samples = scan_image_folder(root, given_classes or imagenet)
    labels = np.array([label for _, label in samples])
    notes: list[str] = []
    if calibration_root is not None:
        _, calib_pool = scan_image_folder(calibration_root, classes, strict=False, where="data.calibration.root")
        pool_labels = np.array([label for _, label in calib_pool])
        calib_samples = [calib_pool[i] for i in balanced_subset(pool_labels, calibration_size, calibration_seed)]
        source = f"from {calibration_root}"
    else:
        if calibration_size >= len(samples):
            raise DataError(
                f"data.calibration.size {calibration_size} leaves no validation images out of {len(samples)} "
                f"in {root}; lower it or give data.calibration.root"
            )
        calib_index = balanced_subset(labels, calibration_size, calibration_seed)
        calib_samples = [samples[i] for i in calib_index]
        keep = np.setdiff1d(np.arange(len(samples)), calib_index)
        samples, labels = [samples[i] for i in keep], labels[keep]
        source = "sliced from the validation folder and excluded from validation"
    if limit is not None:
        samples = [samples[i] for i in balanced_subset(labels, limit, calibration_seed)]
    calibration, calibration_labels, skipped = _load_batch(calib_samples, image_size, transform)
    unreadable = set(skipped)
    present = len({label for _, label in samples})
    count = (f"{present} of ImageNet-1k's 1,000 classes (its label numbers)" if imagenet else
             f"{len(classes)} classes in the spec's order" if given_classes else f"{len(classes)} classes")
    if skipped:
        notes.append(f"{len(skipped)} unreadable calibration images skipped: {', '.join(skipped[:5])}")
    if not imagenet and not given_classes:
        shown = ", ".join(f"{i} {name}" for i, name in enumerate(classes[:4])) + (", ..." if len(classes) > 4 else "")
        notes.append(f"classes are numbered by their sorted folder names ({shown}); a model trained in another "
                     "order scores as if its labels were shuffled: give that order in data.classes")
    return DataBundle(
        validation=ImageFolderDataset(samples, image_size, transform),
        calibration=calibration,
        calibration_labels=calibration_labels,
        calibration_sources=[path for path, _ in calib_samples if path not in unreadable],
        num_classes=len(classes),
        description=(
            f"imagefolder {root}: {len(samples)} validation images, {count}, "
            f"{image_size}x{image_size} {'grayscale' if transform.channels == 1 else 'RGB'} "
            f"(crop {transform.crop_fraction:g}, {transform.interpolation}); "
            f"calibration {len(calibration_labels)} {source}"
        ),
        notes=notes,
    )
