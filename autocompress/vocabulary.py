"""The words a spec may use, defined once: bit-widths, data sets, transform presets,
model-family aliases, path fields. Everything else (spec validation, quantization, the
search space, the report, the data loaders, the service) reads them from here.

Pure data, no imports: validating a spec must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_PRECISION = 32
BITS_CHOICES = (2, 3, 4, 5, 6, 7, 8, 16, FULL_PRECISION)  # the weight bit-widths a search may choose
QUANTIZED_BITS = tuple(b for b in BITS_CHOICES if b != FULL_PRECISION)

# Model families are declared in autocompress.spec.model (the built-in ones) and by
# autocompress.models.register_family; ``custom`` models name their space in space.file.
CUSTOM_FAMILY = "custom"

# Old family names that still build what they built -> the name that says what it is.
FAMILY_ALIASES = {"spikformer": "spikingjelly_spikformer"}

REFERENCE_PREFIX = "reference:"  # model.checkpoint "reference:NAME": a model autocompress trains itself


@dataclass(frozen=True)
class DatasetInfo:
    channels: int | None  # of its images (None: the model's, 1 or 3, as for image folders)
    classes: int | None = None  # fixed by the data set (None: read from the data)
    default_root: str | None = None  # where data.root points when a spec leaves it out
    default_preset: str | None = None  # data.transform's preset when a spec leaves it out
    default_image_size: int = 224
    how_to_get: str | None = None  # said when its files are missing


FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
FASHION_MNIST_HOW_TO_GET = (
    "install Debian's package (apt-get install dataset-fashion-mnist, which puts the four files in "
    f"{FASHION_MNIST_DEFAULT_ROOT}) or download the four *-ubyte.gz files from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into data.root")

DATASETS = {
    "digits": DatasetInfo(channels=1, classes=10, default_image_size=16),
    "imagefolder": DatasetInfo(channels=None, default_preset="timm_default"),
    "cifar10": DatasetInfo(channels=3, classes=10, default_preset="cifar10", default_image_size=32),
    "fashion_mnist": DatasetInfo(channels=1, classes=10, default_root=FASHION_MNIST_DEFAULT_ROOT,
                                 default_preset="fashion_mnist", default_image_size=28,
                                 how_to_get=FASHION_MNIST_HOW_TO_GET),
}
GRAYSCALE_PRESETS = ("fashion_mnist",)  # the presets with one mean/std value (the others have three)

TRANSFORM_PRESETS = ("timm_default", "spikformer_imagenet", "sdt_imagenet", "cifar10", "cifar100", "fashion_mnist")

# Spec fields that name files or folders (resolved, length-checked, confined by the service).
PATH_FIELDS = ("model.checkpoint", "data.root", "data.calibration.root", "data.classes_file", "space.file",
               "output.run_dir")


def canonical_family(family: str) -> str:
    """The family an alias stands for (a family's own name is its canonical name)."""
    return FAMILY_ALIASES.get(family, family)


def energy_unit(mj: float) -> tuple[str, float]:
    """The unit an energy of ``mj`` millijoules reads best in (mJ, uJ, nJ), and its size in
    mJ: the table, status and the report print energies so (here, below them all and free
    of torch)."""
    for unit, scale in (("mJ", 1.0), ("uJ", 1e-3)):
        if abs(mj) >= scale:
            return unit, scale
    return "nJ", 1e-6
