"""The spec's ``data`` section: the data set, its validation and calibration images,
the evaluation transform and the class names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autocompress.spec.fields import Seed, Strict, resolve_path
from autocompress.vocabulary import (
    DATASETS,
    GRAYSCALE_PRESETS,
    TRANSFORM_PRESETS,
)


class ValidationSpec(Strict):
    limit: PositiveInt | None = Field(
        default=None,
        description="evaluate on at most this many images (a class-balanced subset, seeded)",
    )
    holdout: Annotated[float, Field(ge=0, le=0.9)] = Field(
        0.0,
        description="fraction of the validation images held out of the search (class by class, seeded): the "
                    "baseline, the constraints and every decision of the search use the rest (the selection "
                    "split); the Pareto points are measured once more on the held-out images when the search "
                    "ends, and pareto.json reports both. 0: no held-out split (the digits demo); the ImageNet "
                    "specs hold out 0.5",
    )
    holdout_seed: Seed = Field(0, description="seed of the held-out split")


class CalibrationSpec(Strict):
    size: PositiveInt = Field(64, description="images in the calibration batch used by the proxy")
    seed: Seed = 0
    root: Path | None = Field(
        default=None,
        description=(
            "imagefolder only: a folder (same layout) to draw the calibration batch from, "
            "e.g. ImageNet's train folder; without it a slice of the validation folder is "
            "used and excluded from validation"
        ),
    )

    @field_validator("root")
    @classmethod
    def _root_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info, must_exist=True, kind="calibration folder")




class TransformSpec(Strict):
    """Evaluation preprocessing: resize the shorter side to floor(image_size / crop_fraction), center-crop
    image_size, normalise. A preset sets all four as an official evaluation config does; the other
    fields override it."""

    preset: Literal[TRANSFORM_PRESETS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description=(
            "timm_default (crop 0.875, bilinear, ImageNet mean/std; the imagefolder default), "
            "spikformer_imagenet (crop 1.0, bicubic: ZK-Zhou/spikformer imagenet.yml), sdt_imagenet (crop 0.95, "
            "bicubic: Spike-Driven-Transformer conf/imagenet), cifar10 / cifar100 (crop 1.0, bicubic, the CIFAR "
            "mean/std; cifar10 is the cifar10 default)"
        ),
    )
    crop_fraction: float | None = Field(default=None, gt=0.05, le=1.0, description="timm's crop_pct")
    interpolation: Literal["bilinear", "bicubic"] | None = Field(None, description="resize interpolation")
    mean: Annotated[list[float], Field(min_length=1, max_length=4)] | None = Field(
        None, description="per-channel mean subtracted after scaling to [0, 1]")
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1, max_length=4)] | None = Field(
        None, description="per-channel standard deviation divided by")


MAX_CLASSES = 100_000  # names in data.classes or data.classes_file
MAX_CLASS_NAME = 255  # a folder name's length


class DataSpec(Strict):
    dataset: Literal[tuple(DATASETS)] = Field(  # type: ignore[valid-type]
        "digits", description="digits (embedded, scikit-learn), fashion_mnist, cifar10, or imagefolder (ImageNet layout)")
    root: Path | None = Field(
        default=None,
        description=(
            "imagefolder: the validation folder (root/<class>/<image>, RGB or grayscale); cifar10: the folder "
            "holding cifar-10-batches-py or cifar-10-batches-bin; fashion_mnist: the folder of its four IDX files "
            f"(default {DATASETS['fashion_mnist'].default_root}, Debian's dataset-fashion-mnist); digits: not used"
        ),
    )
    image_size: PositiveInt | None = Field(
        default=None, description="input resolution; default 16 (digits), 28 (fashion_mnist), 32 (cifar10), "
                                  "224 (imagefolder)"
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="which validation images, and the held-out split")
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec, description="the proxy's calibration batch")
    batch_size: PositiveInt = Field(128, description="evaluation batch size")
    workers: NonNegativeInt = Field(0, description="data-loading worker processes")
    class_index: Literal["auto", "folders", "imagenet"] = Field(
        default="auto",
        description=(
            "imagefolder: how class folders become label numbers. folders: the sorted folder names (class i is "
            "the i-th folder); imagenet: ImageNet-1k's label numbers, the folders being its synset ids, so a "
            "folder holding some of the 1,000 classes keeps the labels of a 1,000-way model; auto: imagenet "
            "when every folder is an ImageNet-1k synset id, there are fewer than 1,000 and the model has 1,000 "
            "outputs, else folders (the two agree on the full 1,000). data.classes or data.classes_file, when "
            "given, number the folders instead"
        ),
    )
    classes: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_CLASS_NAME)]],
                       Field(min_length=1, max_length=MAX_CLASSES)] | None = Field(
        default=None,
        description="imagefolder: the class folders in the order the model was trained with (label i is the i-th "
                    "name), e.g. [T-shirt, Trouser, ...]; every class folder must be named here",
    )
    classes_file: Path | None = Field(
        default=None,
        description="imagefolder: a text file of the class folder names in label order, one per line (as "
                    "data.classes)",
    )
    transform: TransformSpec = Field(
        default_factory=TransformSpec,
        description="evaluation preprocessing of imagefolder, cifar10 and fashion_mnist images (preset, crop, "
                    "interpolation, mean/std; one mean/std value each for grayscale images)",
    )

    @field_validator("root")
    @classmethod
    def _root_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _data_root(value, info, (info.data or {}).get("dataset"))

    @field_validator("classes_file")
    @classmethod
    def _classes_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info, must_exist=True, kind="class list file")

    @field_validator("classes")
    @classmethod
    def _classes_distinct(cls, value: list[str] | None) -> list[str] | None:
        return _check_class_names(value, "data.classes")

    @model_validator(mode="after")
    def _dataset_fits(self, info: ValidationInfo) -> DataSpec:
        dataset_info = DATASETS[self.dataset]
        if self.dataset == "digits" and self.root is not None:
            raise ValueError("dataset 'digits' is bundled with scikit-learn and takes no root; remove data.root")
        if self.root is None and dataset_info.default_root is not None:
            self.root = _data_root(Path(dataset_info.default_root), info, self.dataset, default=True)
        if self.dataset != "digits" and self.root is None:
            raise ValueError(f"dataset '{self.dataset}' needs data.root, the local folder that holds it")
        if self.calibration.root is not None and self.dataset != "imagefolder":
            raise ValueError("data.calibration.root is only used with dataset 'imagefolder'")
        if self.image_size is None:
            self.image_size = dataset_info.default_image_size
        if self.dataset != "imagefolder" and self.class_index == "imagenet":
            raise ValueError(f"data.class_index imagenet is for imagefolder data, not {self.dataset}")
        if (self.classes is not None or self.classes_file is not None) and self.dataset != "imagefolder":
            raise ValueError(f"data.classes and data.classes_file are for imagefolder data; {self.dataset} has its "
                             "own label order")
        if (self.classes is not None or self.classes_file is not None) and self.class_index == "imagenet":
            raise ValueError("data.class_index imagenet numbers the folders by ImageNet-1k's synset ids; with "
                             "data.classes (or classes_file) the order is yours: remove one")
        if self.classes_file is not None and (info.context or {}).get("check_paths", True):
            listed = _read_class_file(self.classes_file)
            # a validated spec holds the file's names (a run freezes them, so its workers need no file)
            if self.classes is not None and self.classes != listed:
                raise ValueError("data.classes and data.classes_file both give the class order, and differ; keep one")
            self.classes = listed
        if self.dataset == "digits" and self.transform != TransformSpec():
            raise ValueError("data.transform is for imagefolder, cifar10 and fashion_mnist images; the digits set "
                             "has no preprocessing to set: remove data.transform")
        mean, std = self.transform.mean, self.transform.std
        if mean is not None and std is not None and len(mean) != len(std):
            raise ValueError(f"data.transform.mean has {len(mean)} values and std {len(std)}; give one per image "
                             "channel to each")
        for name in ("mean", "std"):
            values = getattr(self.transform, name)
            allowed = (dataset_info.channels,) if dataset_info.channels is not None else (1, 3)
            if values is not None and len(values) not in allowed:
                raise ValueError(f"data.transform.{name} has {len(values)} values; {self.dataset} images have "
                                 + (f"{dataset_info.channels} channel{'s' if dataset_info.channels > 1 else ''}"
                                    if dataset_info.channels is not None else "1 (grayscale) or 3 (R, G, B) channels"))
        return self

    def transform_channels(self) -> int:
        """Channels of the evaluation transform's images: its mean/std's values, else its preset's."""
        values = self.transform.mean or self.transform.std
        if values is not None:
            return len(values)
        preset = self.transform.preset or DATASETS[self.dataset].default_preset
        return 1 if preset in GRAYSCALE_PRESETS else 3


def _data_root(value: Path | None, info: ValidationInfo, dataset: str | None, default: bool = False) -> Path | None:
    """``data.root`` resolved (and confined) as every path; a missing one of a data set that
    says how to get it gets that advice."""
    try:
        return resolve_path(value, info, must_exist=True, kind="data root" + (" (the default)" if default else ""))
    except ValueError as error:
        hint = DATASETS[dataset].how_to_get if dataset in DATASETS else None
        if hint is None or "not found" not in str(error):
            raise
        raise ValueError(f"{error}; {dataset}: {hint}") from None


def _check_class_names(names: list[str] | None, where: str) -> list[str] | None:
    if names is None:
        return None
    bad = [name for name in names if name in (".", "..") or "/" in name or "\x00" in name]
    if bad:
        raise ValueError(f"{where}: {bad[0]!r} is not a folder name")
    seen: set[str] = set()
    twice = [name for name in names if name in seen or seen.add(name)]
    if twice:
        raise ValueError(f"{where}: {twice[0]!r} is named twice; each class folder has one label")
    return names


def _read_class_file(path: Path) -> list[str]:
    limit = MAX_CLASSES * (MAX_CLASS_NAME + 1)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as error:
        raise ValueError(f"data.classes_file: cannot read {path}: {error.strerror}") from None
    if len(raw) > limit:
        raise ValueError(f"data.classes_file: {path} is larger than {limit:,} bytes; it lists class folder names, "
                         "one per line")
    try:
        names = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"data.classes_file: {path} is not UTF-8 text") from None
    if not names:
        raise ValueError(f"data.classes_file: {path} names no class")
    if len(names) > MAX_CLASSES or any(len(name) > MAX_CLASS_NAME for name in names):
        raise ValueError(f"data.classes_file: {path}: at most {MAX_CLASSES:,} names of at most {MAX_CLASS_NAME} "
                         "characters")
    return _check_class_names(names, f"data.classes_file ({path})")
