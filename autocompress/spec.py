"""The constraint spec: what a user asks autocompress to do.

A spec is a YAML or JSON document validated by the pydantic models below. Unknown
keys are errors (a typo must never be silently ignored), and every error names the
field path, the bad value and what is allowed. Relative paths in a spec are
resolved against the folder of the spec file, so a spec means the same thing from
any working directory; validated specs hold absolute paths.

``load_spec(path)`` reads and validates a file; ``validate_spec(data, base_dir)``
validates an already-parsed mapping (the HTTP service uses this);
``spec_json_schema()`` is the JSON Schema that editors and the service validate
against.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import re
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autocompress.confine import resolve_inside
from autocompress.documents import DocumentError, parse_json, parse_yaml, short_repr
from autocompress.errors import SpecError
from autocompress.recipes import check_reference_fits
from autocompress.search import strategy_options
from autocompress.vocabulary import (
    BITS_CHOICES,
    DATASETS,
    GRAYSCALE_PRESETS,
    PATH_FIELDS,
    REFERENCE_PREFIX,
    TRANSFORM_PRESETS,
)

__all__ = [
    "ModelSpec",
    "StrategySpec",
    "Spec",
    "load_spec",
    "read_spec_file",
    "spec_json_schema",
    "validate_spec",
]



Seed = Annotated[int, Field(ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255  # bytes in one path component (every common file system)


class FieldError(ValueError):
    """A problem a cross-field check finds, with the field it belongs to (``model.args.in_channels``),
    so that the message carries a field path like the errors of single fields."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def _check_path_text(text: str) -> None:
    """Refuse path strings that the OS would reject with an error of its own."""
    if "\x00" in text:
        raise ValueError("a path cannot contain a NUL character")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_LENGTH:
        raise ValueError(f"a path of more than {MAX_PATH_LENGTH} bytes")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH for part in text.split(os.sep)):
        raise ValueError(f"a path component of more than {MAX_NAME_LENGTH} bytes")


def _resolve_path(value: Path | None, info: ValidationInfo, *, must_exist: bool, kind: str,
                  confinable: bool = True) -> Path | None:
    """Make ``value`` absolute against the spec's folder; check it exists when asked.

    Confined validation (the service's; context ``confine``: a list of root folders,
    already realpaths) refuses '~' and resolves symlinks without looking outside the
    roots (autocompress.confine), so a path that leaves them is refused before anything
    there is looked at; its messages quote the path only as given.
    It applies to what a search reads (``confinable``), not to where it writes.
    """
    if value is None:
        return None
    context = info.context or {}
    base_dir = Path(context.get("base_dir") or Path.cwd())
    text = str(value)
    _check_path_text(text)
    confine = context.get("confine") if confinable else None
    if confine is not None:
        if text.startswith("~"):
            raise ValueError(f"'{text}': paths starting with '~' are not accepted here; give a path under a data root")
        real = resolve_inside(text if os.path.isabs(text) else os.path.join(base_dir, text), confine)
        if real is None:
            raise ValueError(f"'{text}' is outside the data roots this service reads; only paths under them are "
                             "accepted (relative paths are read from the first data root)")
        path = Path(real)
        where = f"'{text}'"
    else:
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = base_dir / path
        path = Path(os.path.normpath(path))
        where = f"{path} (given as '{text}'; relative paths are read from the spec's folder {base_dir})"
    if must_exist and context.get("check_paths", True) and not path.exists():
        raise ValueError(f"{kind} not found: {where}")
    return path


# --------------------------------------------------------------------------- model


class _ModelBase(_Strict):
    checkpoint: str | None = Field(
        default=None,
        description=(
            "Checkpoint of the trained model, loaded with weights only: a state dict, or a training "
            "script's checkpoint (timm's model_best.pth.tar / checkpoint-N.pth.tar); the official "
            "Spikformer and Spike-driven Transformer layouts are converted (`autocompress "
            "inspect-checkpoint FILE` says which family and args fit a file). Or 'reference:NAME' for a "
            "reference model autocompress trains itself on embedded data (see `autocompress "
            "train-reference --list`)."
        ),
    )
    ema: bool = Field(
        default=False,
        description="use the checkpoint's EMA weights (timm's state_dict_ema) instead of its model weights",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.startswith(REFERENCE_PREFIX):
            return value
        path = _resolve_path(Path(value), info, must_exist=True, kind="checkpoint file")
        if path.is_dir():
            raise ValueError(f"checkpoint '{value}' is a folder; give the path of a .pt state-dict file")
        return str(path)


def _check_embedding(embed_dims: int, num_heads: int) -> None:
    """Both SpikingJelly SViT families split embed_dims over heads and over the stem's /8 stage."""
    if embed_dims % num_heads:
        raise ValueError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
    if embed_dims % 8:
        raise ValueError(f"embed_dims {embed_dims} must be divisible by 8 (the stem uses embed_dims/8 channels)")


class SpikformerArgs(_Strict):
    """Arguments of SpikingJelly 2.0's ``Spikformer`` (defaults: Spikformer-8-512, ImageNet)."""

    T: PositiveInt = Field(4, description="time steps")
    in_channels: PositiveInt = 3
    image_size: PositiveInt = 224
    patch_size: Literal[4, 16] = 16
    num_classes: PositiveInt = 1000
    embed_dims: PositiveInt = 512
    num_heads: PositiveInt = 8
    mlp_ratio: PositiveFloat = 4.0
    depths: PositiveInt = Field(8, description="number of transformer blocks")

    @model_validator(mode="after")
    def _shapes_fit(self) -> SpikformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")
        return self


class _OfficialSpikformerArgs(_Strict):
    T: PositiveInt = Field(4, description="time steps (the official code uses 4)")
    in_channels: PositiveInt = 3
    mlp_ratio: PositiveFloat = 4.0
    _patch = 16

    @model_validator(mode="after")
    def _shapes_fit(self) -> _OfficialSpikformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        if self.image_size % self._patch:
            raise ValueError(f"image_size {self.image_size} must be divisible by {self._patch} (the stem pools "
                             f"{self._patch.bit_length() - 1} times by 2)")
        return self


class SpikformerImageNetArgs(_OfficialSpikformerArgs):
    """Arguments of the official Spikformer ImageNet model (ZK-Zhou/spikformer imagenet/model.py;
    defaults: Spikformer-8-512 with 8 heads, 224x224, as the official code fixes them). The stem
    pools four times (16x16 patches)."""

    image_size: PositiveInt = 224
    num_classes: PositiveInt = 1000
    embed_dims: PositiveInt = 512
    num_heads: PositiveInt = 8
    depths: PositiveInt = Field(8, description="number of transformer blocks")


class SpikformerCIFARArgs(_OfficialSpikformerArgs):
    """Arguments of the official Spikformer CIFAR model (ZK-Zhou/spikformer cifar10/model.py, also
    CIFAR-100; defaults: Spikformer-4-384, 32x32). The stem pools twice (4x4 patches)."""

    image_size: PositiveInt = 32
    num_classes: PositiveInt = 10
    embed_dims: PositiveInt = 384
    num_heads: PositiveInt = 12
    depths: PositiveInt = Field(4, description="number of transformer blocks")
    _patch = 4


class SpikeDrivenTransformerArgs(_Strict):
    """Arguments of the Spike-driven Transformer v1 (defaults: SDT-8-384, ImageNet; CIFAR models
    use pooling_stat '0011' at 32x32)."""

    T: PositiveInt = Field(4, description="time steps")
    in_channels: PositiveInt = 3
    image_size: PositiveInt = 224
    num_classes: PositiveInt = 1000
    embed_dims: PositiveInt = 384
    num_heads: PositiveInt = 8
    mlp_ratio: PositiveFloat = 4.0
    depths: PositiveInt = Field(8, description="number of transformer blocks")
    pooling_stat: Annotated[str, Field(pattern=r"^[01]{4}$")] = Field(
        "1111", description="which of the four stem stages downsample by 2 ('1') or not ('0')"
    )

    @model_validator(mode="after")
    def _shapes_fit(self) -> SpikeDrivenTransformerArgs:
        _check_embedding(self.embed_dims, self.num_heads)
        return self




class SpikingJellySpikformerModel(_ModelBase):
    """SpikingJelly 2.0's own Spikformer (stem conv -> BN -> max-pool -> LIF). It is not the network
    of the official Spikformer checkpoints: use spikformer_imagenet / spikformer_cifar for those.
    'spikformer', its earlier name, is still accepted."""

    family: Literal["spikingjelly_spikformer", "spikformer"]
    args: SpikformerArgs = Field(default_factory=SpikformerArgs)


class SpikformerImageNetModel(_ModelBase):
    """The official Spikformer ImageNet network; loads the authors' checkpoints."""

    family: Literal["spikformer_imagenet"]
    args: SpikformerImageNetArgs = Field(default_factory=SpikformerImageNetArgs)


class SpikformerCIFARModel(_ModelBase):
    """The official Spikformer CIFAR-10/100 network; loads the authors' checkpoints."""

    family: Literal["spikformer_cifar"]
    args: SpikformerCIFARArgs = Field(default_factory=SpikformerCIFARArgs)


class SpikeDrivenTransformerModel(_ModelBase):
    """Spike-driven Transformer v1 as the official code computes it; loads the authors' checkpoints."""

    family: Literal["spike_driven_transformer"]
    args: SpikeDrivenTransformerArgs = Field(default_factory=SpikeDrivenTransformerArgs)


class CustomModel(_ModelBase):
    """A user model: ``factory`` is ``package.module:function`` returning an ``nn.Module``
    whose spiking neurons are SpikingJelly neurons."""

    family: Literal["custom"]
    factory: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = Field(
        description=(
            "import path of the model factory, 'package.module:function'; modules beside "
            "the spec file and in the working directory are importable"
        )
    )
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    time_steps: PositiveInt | None = Field(
        default=None,
        description=(
            "when set, images [N,C,H,W] are repeated to [T,N,C,H,W] before the model is "
            "called; leave unset when the model repeats them itself"
        ),
    )
    _spec_dir: Path | None = PrivateAttr(default=None)  # the factory may live beside the spec

    @model_validator(mode="after")
    def _remember_spec_dir(self, info: ValidationInfo) -> CustomModel:
        base_dir = (info.context or {}).get("base_dir")
        self._spec_dir = Path(base_dir) if base_dir else None
        return self


ModelSpec = Annotated[
    Union[SpikformerImageNetModel, SpikformerCIFARModel, SpikeDrivenTransformerModel, SpikingJellySpikformerModel,
          CustomModel],
    Field(discriminator="family"),
]

# --------------------------------------------------------------------------- data


class ValidationSpec(_Strict):
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


class CalibrationSpec(_Strict):
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
        return _resolve_path(value, info, must_exist=True, kind="calibration folder")




class TransformSpec(_Strict):
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
    interpolation: Literal["bilinear", "bicubic"] | None = None
    mean: Annotated[list[float], Field(min_length=1, max_length=4)] | None = None
    std: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1, max_length=4)] | None = None


MAX_CLASSES = 100_000  # names in data.classes or data.classes_file
MAX_CLASS_NAME = 255  # a folder name's length


class DataSpec(_Strict):
    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
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
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    batch_size: PositiveInt = 128
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
        return _resolve_path(value, info, must_exist=True, kind="class list file")

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
        return _resolve_path(value, info, must_exist=True, kind="data root" + (" (the default)" if default else ""))
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


# --------------------------------------------------------------------------- constraints


class AccuracyConstraint(_Strict):
    max_drop: float = Field(
        ge=0, le=100,
        description="largest allowed top-1 accuracy drop: points (absolute) or percent of the baseline (relative), "
                    "0 to 100",
    )
    kind: Literal["absolute", "relative"] = "absolute"
    confidence: float | None = Field(
        default=0.95, gt=0.5, lt=1,
        description="a candidate is accuracy-feasible only when the upper confidence bound on its drop, at this "
                    "level, is within max_drop (a paired comparison with the baseline image by image: a drop "
                    "measured on a few thousand images is uncertain by a few tenths of a point, and a search that "
                    "keeps the smallest candidate just under the limit keeps one whose drop it underestimated); "
                    "with a held-out split the recommended point passes the same test on the held-out images. "
                    "null: decide on the measured drop (optimistic)",
    )


class MemoryConstraint(_Strict):
    min_saving: float | None = Field(
        default=None, ge=0, lt=1, description="fraction of the FP32 footprint to save, e.g. 0.8"
    )
    max_bytes: PositiveInt | None = Field(default=None, description="largest allowed footprint in bytes")

    @model_validator(mode="after")
    def _at_least_one(self) -> MemoryConstraint:
        if self.min_saving is None and self.max_bytes is None:
            raise ValueError("give min_saving (a fraction, e.g. 0.8) and/or max_bytes")
        return self


class EnergyConstraint(_Strict):
    max_mj: PositiveFloat | None = Field(default=None, description="largest allowed energy estimate per image, in mJ")
    min_saving: float | None = Field(
        default=None, ge=0, lt=1, description="fraction of the uncompressed model's energy estimate to save, e.g. 0.3")

    @model_validator(mode="after")
    def _at_least_one(self) -> EnergyConstraint:
        if self.max_mj is None and self.min_saving is None:
            raise ValueError("give max_mj (millijoules per image) and/or min_saving (a fraction, e.g. 0.3)")
        return self


class LatencyConstraint(_Strict):
    max_ms: PositiveFloat = Field(description="largest allowed median latency of one image (batch 1), milliseconds")


class ConstraintsSpec(_Strict):
    accuracy: AccuracyConstraint
    memory: MemoryConstraint
    energy: EnergyConstraint | None = Field(
        default=None, description="a limit on the energy estimate per image (spikes and operations counted on the "
                                  "calibration batch; the energy section prices them)")
    latency: LatencyConstraint | None = Field(
        default=None, description="a limit on the measured latency at batch 1 (needs latency.measure: true)")


class LatencySpec(_Strict):
    """Measured latency of each candidate (its compressed model, as exported), at its probe."""

    measure: bool = Field(False, description="time every probed candidate (and the baseline)")
    batch_size: PositiveInt = Field(16, description="the batch size timed besides batch 1")
    repeats: PositiveInt = Field(10, description="timed forward passes per batch size (the median is kept)")
    warmup: NonNegativeInt = Field(2, description="untimed forward passes first")


class EnergySpec(_Strict):
    """How the energy estimate prices the counted operations (autocompress.proxy.energy)."""

    ac_pj: PositiveFloat = Field(0.9, description="energy of an accumulate (pJ): 45 nm, 32-bit float add")
    mac_pj: PositiveFloat = Field(4.6, description="energy of a multiply-accumulate (pJ): 45 nm, 32-bit float")
    bit_aware: bool = Field(False, description="price a quantized layer's operations as b-bit integer ones "
                                               "(Horowitz 2014: adds linear, multiplies quadratic in the width)")


# --------------------------------------------------------------------------- space


class SpaceSpec(_Strict):
    file: Path | None = Field(
        default=None, description="a search_spaces/*.yaml file; inline choices below override its choices"
    )
    granularity: Literal["network", "stage", "block", "layer"] = "block"
    outside_blocks: Literal["unit", "stage"] = Field(
        "unit", description="at block granularity, the units outside the transformer blocks (stem layers and channel "
                            "groups, the head): a dimension each (unit), or one per stage (stage: runs before 2026-12-03)")
    search: Literal["joint", "prune", "quantize"] = Field(
        "joint", description="search pruning and quantization together, or one alone"
    )
    prune_rates: list[Annotated[float, Field(ge=0, lt=1)]] | None = Field(
        default=None, description="allowed structured-pruning rates per unit, e.g. [0, 0.25, 0.5]"
    )
    bits: list[Literal[BITS_CHOICES]] | None = Field(  # type: ignore[valid-type]
        default=None, description="allowed weight bit-widths per unit; 32 means unquantized"
    )

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info, must_exist=True, kind="search-space file")

    @field_validator("prune_rates", "bits")
    @classmethod
    def _non_empty_sorted(cls, value: list | None) -> list | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one choice, or leave the key out")
            value = sorted(set(value))
        return value


# --------------------------------------------------------------------------- strategy


# Each strategy declares its options model where it is defined (autocompress.search.strategies).
StrategySpec = Annotated[Union[strategy_options()], Field(discriminator="name")]  # type: ignore[valid-type]

# --------------------------------------------------------------------------- the rest


def _auto_or_non_negative(value: Any) -> Any:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"must be 'auto' or a number >= 0 (got {value!r})")
    return float(value)


class ProxySpec(_Strict):
    metric: Literal["membrane_drift"] = "membrane_drift"
    threshold: Annotated[Literal["auto"] | Annotated[float, Field(ge=0)], BeforeValidator(_auto_or_non_negative)] = Field(
        "auto", description="gate threshold on the drift: a number, or 'auto' to calibrate it online"
    )
    enabled: bool = Field(True, description="false sends every candidate to full evaluation (no gate)")
    gate: bool = Field(True, description="false: the drift still ranks candidates (probes) but the gate rejects "
                                         "none; every candidate a strategy asks for in full is evaluated")
    logits: bool = Field(True, description="count the model's output (its logits, centred per image) as one more "
                                           "term of the drift, so that quantizing the classification head, which "
                                           "feeds no neuron, shows in it")


class CompressionSpec(_Strict):
    """How a candidate's model is built from its config, beyond its pruning rates and bit-widths."""

    fold_batchnorm: bool = Field(
        True, description="fold every BatchNorm into the layer before it (checked exact on the calibration "
                          "images), as a deployed model stores it: its statistics no longer count in the footprint")
    mse_clipping: bool = Field(
        True, description="quantize each output channel with the range (a fraction of its largest weight) that "
                           "minimises its squared rounding error, instead of its largest weight")
    recalibrate_batchnorm: bool = Field(
        True, description="re-estimate the BatchNorm statistics of each pruned and quantized candidate on the "
                           "calibration images (through the spiking forward) before folding them")
    bias_correction: bool = Field(
        False, description="correct each quantized layer's bias for the shift its rounding puts on the mean of its "
                           "output, measured on the calibration images (a recalibrated BatchNorm after the layer "
                           "absorbs it anyway)")
    importance: Literal["l2", "variance", "activation"] = Field(
        "variance", description="which channels pruning removes: variance (VBP: the least varying spike rates on the "
                                "calibration images, their mean rates folded into the next layer's bias), l2 (the "
                                "smallest filters, PSViT/PrimeSVT) or activation (as variance, each channel's rate "
                                "variance weighted by the squared norm of the weights it feeds)")


class EvaluationSpec(_Strict):
    """How full validations run: sharded over workers, stopped early when certainly infeasible."""

    early_stopping: bool = Field(
        True, description="stop a candidate's full validation once its accuracy drop is certainly beyond the limit "
                          "(feasible candidates are always validated on every image)")
    confidence: float = Field(
        0.999, gt=0.5, lt=1.0,
        description="early stopping's confidence: a candidate feasible on the whole set is stopped with probability "
                    "below 1 - confidence")
    shard_images: PositiveInt | None = Field(
        None, description="images per shard of a full validation (a multiple of data.batch_size); null: about 128 shards")
    order_seed: Seed = Field(0, description="seed of the class-stratified validation order")
    decoded_cache: bool = Field(
        True, description="imagefolder data: decode the validation images once per node into a uint8 cache "
                          "($AUTOCOMPRESS_CACHE/decoded) that every later evaluation reads")
    autocast: Literal["off", "bf16", "fp16"] = Field(
        "off", description="run the forward passes under torch.autocast; checked on the baseline against FP32 first")
    autocast_tolerance: float = Field(
        0.3, ge=0, description="top-1 points the baseline under autocast may differ from FP32 (else the search refuses)")


class BudgetSpec(_Strict):
    max_full_evaluations: PositiveInt = 60
    max_hours: PositiveFloat | None = None
    max_probes: PositiveInt | None = Field(
        None, description="at most this many probes (proxy evaluations on the calibration batch) in a run, earlier "
                          "sessions included; the search then stops with `probe budget`. null: 100 x "
                          "max_full_evaluations (a backstop for a strategy whose proposals keep coming to no full "
                          "evaluation)")
    probe_cost: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="what one probe counts for against max_full_evaluations, in full evaluations (0: probes "
                         "are not counted; ImageNet: about 0.003, a 64-image probe against a 50,000-image validation)")


class ExecutionSpec(_Strict):
    workers: NonNegativeInt = Field(0, description="evaluation workers; 0 evaluates in the driver process")
    ray_address: str | None = Field(
        default=None, description="null starts a local Ray; 'auto' or 'host:port' joins a cluster"
    )
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")] = Field(
        "auto", description="auto picks CUDA when present"
    )


CANDIDATE_ID = r"^[0-9a-f]{12}$"


class FinetunePointsSpec(_Strict):
    ids: Annotated[list[Annotated[str, Field(pattern=CANDIDATE_ID)]], Field(max_length=64)] = Field(
        default_factory=list, description="fully evaluated candidates to fine-tune, by id (pareto.json's ids)")
    best_feasible: bool = Field(True, description="fine-tune the best feasible point")
    near_misses_within: Annotated[float, Field(ge=0)] | None = Field(
        5.0, description="also the Pareto points whose memory fits but whose accuracy drop exceeds the allowed one "
                         "by at most this many points (null: none)")


class FinetuneDataSpec(_Strict):
    root: Path | None = Field(
        default=None,
        description=("imagefolder: the training folder (root/<class>/<image>, ImageNet's train layout; required); "
                     "cifar10: the folder holding the training batches (default: data.root); digits: not used "
                     "(its training split)"))
    augment: bool = Field(True, description="the usual training augmentation (digits: random shifts; cifar10: "
                                            "random crop with 4-pixel padding and flips; imagefolder: random "
                                            "resized crop and flips)")
    images_per_epoch: PositiveInt | None = Field(
        default=None, description="train on this many randomly drawn images per epoch (a new draw each epoch) "
                                  "instead of the whole training set")

    @field_validator("root")
    @classmethod
    def _root_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info, must_exist=True, kind="training data root")


class DistillationSpec(_Strict):
    logits: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="weight of the distillation loss on the uncompressed model's logits (KL divergence at "
                         "the temperature, times T^2); the cross-entropy on the labels gets 1 - this")
    temperature: Annotated[float, Field(gt=0, le=100)] = 4.0
    membrane: Annotated[float, Field(ge=0, le=1000)] = Field(
        1.0, description="weight of matching the membrane potentials of the kept channels to the uncompressed "
                         "model's (each neuron layer's mean squared difference over the teacher's mean square); "
                         "0 turns it off")


class FinetuneSpec(_Strict):
    """Recovery fine-tuning of compressed candidates (``autocompress finetune``)."""

    auto: bool = Field(False, description="fine-tune the selected points when the search ends")
    points: FinetunePointsSpec = Field(default_factory=FinetunePointsSpec)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = Field(64, description="training images per step (per worker with finetune.workers)")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: Annotated[float, Field(gt=0, le=10)] = Field(5e-4, description="peak learning rate")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="sgd only")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after the warm-up")
    warmup_epochs: NonNegativeInt = 0
    seed: Seed = 0
    validate_every: NonNegativeInt = Field(
        1, description="epochs between validation accuracies shown as progress (0: only at the end); the last "
                       "epoch is always the result, whatever these say")
    data: FinetuneDataSpec = Field(default_factory=FinetuneDataSpec)
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    workers: NonNegativeInt = Field(
        0, description="0 trains in this process; N >= 1 trains data-parallel on N Ray Train workers (one per GPU "
                       "with a GPU device), on execution.ray_address")

    @model_validator(mode="after")
    def _warmup_fits(self) -> FinetuneSpec:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise ValueError(f"finetune.warmup_epochs {self.warmup_epochs} must be below finetune.epochs "
                             f"{self.epochs}")
        return self


class OutputSpec(_Strict):
    run_dir: Path | None = Field(default=None, description="where the run is stored; default runs/<name>-<date>-<time> beside the spec")

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_path(value, info, must_exist=False, kind="run folder", confinable=False)


class Spec(_Strict):
    """A constraint spec: the model, the data, the constraints, and how to search."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)] = Field(
        description="run name: letters, digits, '.', '_' and '-'"
    )
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    constraints: ConstraintsSpec
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    strategy: StrategySpec = Field(default_factory=lambda: strategy_options("greedy")(name="greedy"))
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _model_fits_data(self, info: ValidationInfo) -> Spec:
        shard = self.evaluation.shard_images
        if shard is not None and shard % self.data.batch_size:
            raise ValueError(f"evaluation.shard_images {shard} is not a multiple of data.batch_size "
                             f"{self.data.batch_size}: a shard is whole batches, so that a sharded validation batches "
                             f"exactly as one pass does; use {max(1, round(shard / self.data.batch_size)) * self.data.batch_size}")
        args = self.model.args
        if isinstance(args, (SpikformerArgs, _OfficialSpikformerArgs, SpikeDrivenTransformerArgs)):
            if "image_size" not in args.model_fields_set:  # unset: the data's size (one --set changes both)
                args.image_size = self.data.image_size
                try:
                    args._shapes_fit()
                except ValueError as error:
                    raise ValueError(f"data.image_size {self.data.image_size} does not fit the model "
                                     f"(model.args.image_size follows it): {error}") from None
            if args.image_size != self.data.image_size:
                raise ValueError(
                    f"model.args.image_size {args.image_size} differs from data.image_size "
                    f"{self.data.image_size}; make them equal"
                )
            channels = DATASETS[self.data.dataset].channels
            if channels is not None and args.in_channels != channels:
                raise FieldError("model.args.in_channels",
                                 f"the {self.data.dataset} images have {channels} channel{'s' if channels > 1 else ''}"
                                 f" ({'grayscale' if channels == 1 else 'RGB'}); set model.args.in_channels: "
                                 f"{channels} (got {args.in_channels})")
            if channels is None:
                _check_folder_channels(args.in_channels, self.data)
            classes = DATASETS[self.data.dataset].classes
            if classes is not None and args.num_classes != classes:
                raise FieldError("model.args.num_classes",
                                 f"the {self.data.dataset} data set has {classes} classes; set "
                                 f"model.args.num_classes: {classes} (got {args.num_classes})")
        checkpoint = self.model.checkpoint
        if checkpoint and checkpoint.startswith(REFERENCE_PREFIX):
            check_reference_fits(checkpoint[len(REFERENCE_PREFIX):], self.model.family, self.model.args.model_dump(),
                                 self.data.dataset, self.data.image_size)
        if self.constraints.latency is not None and not self.latency.measure:
            raise ValueError("constraints.latency needs measured latencies: set latency.measure: true")
        train_root = self.finetune.data.root
        if train_root is not None and self.data.dataset == "digits":
            raise ValueError("finetune.data.root: the digits set trains on its bundled training split; remove it")
        if self.output.run_dir is None:
            base_dir = Path((info.context or {}).get("base_dir") or Path.cwd())
            stamp = time.strftime("%Y%m%d-%H%M%S")  # each search of the spec gets its own run folder
            self.output.run_dir = Path(os.path.normpath(base_dir / "runs" / f"{self.name}-{stamp}"))
        return self


def _check_folder_channels(in_channels: int, data: DataSpec) -> None:
    """Image folders are read as RGB or grayscale, as the model takes them; the transform's
    mean/std must have one value per channel."""
    if in_channels not in (1, 3):
        raise FieldError("model.args.in_channels", f"{in_channels}: image folders are read as grayscale (1) or RGB (3)")
    have = data.transform_channels()
    if have != in_channels:
        fix = ("set data.transform.mean and std to one value each (e.g. mean: [0.5], std: [0.5], or your training "
               "set's), or data.transform.preset: fashion_mnist" if in_channels == 1 else
               "set data.transform.mean and std to three values each, or an RGB preset")
        raise FieldError("data.transform", f"model.args.in_channels is {in_channels}, but data.transform normalises "
                                           f"{have}-channel images; {fix}")


# --------------------------------------------------------------------------- loading


MAX_SPEC_BYTES = 1 << 20


def parse_spec_text(text: str, source: str, *, fmt: Literal["yaml", "json"] = "yaml") -> dict[str, Any]:
    """Parse spec text into a mapping of plain data (bounded: see autocompress.documents),
    or raise SpecError."""
    try:
        data = parse_json(text) if fmt == "json" else parse_yaml(text, source)
    except json.JSONDecodeError as error:
        raise SpecError(source, [("", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")]) from None
    except DocumentError as error:
        raise SpecError(source, [("", f"not accepted as a spec: {error}")]) from None
    except yaml.YAMLError as error:
        raise SpecError(source, [("", f"not valid YAML: {error}")]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, [("", f"a spec is a mapping of sections (name, model, data, ...); this file is {kind}")])
    return data


def read_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a spec file (``.json`` as JSON, anything else as YAML) into a mapping."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(str(path), [("", f"the spec file is larger than {MAX_SPEC_BYTES >> 20} MiB; a spec is a "
                                             "few hundred bytes")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [("", "spec file not found")]) from None
    except IsADirectoryError:
        raise SpecError(str(path), [("", "is a folder; give the path of a .yaml or .json spec file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(str(path), [("", f"cannot read the spec file: {error}")]) from None
    return parse_spec_text(text, str(path), fmt="json" if path.suffix.lower() == ".json" else "yaml")


def validate_spec(
    data: dict[str, Any], *, base_dir: str | os.PathLike | None = None, source: str = "spec", check_paths: bool = True,
    confine: Sequence[str | os.PathLike] | None = None,
) -> Spec:
    """Validate a parsed spec. Relative paths resolve against ``base_dir``; with
    ``check_paths`` the files and folders it names must exist. With ``confine`` (a list
    of folders), every path must resolve inside one of them, symlinks followed, and is
    kept resolved (what the search opens is what was checked)."""
    context = {"base_dir": Path(base_dir or Path.cwd()).resolve(), "check_paths": check_paths,
               "confine": None if confine is None else [os.path.realpath(root) for root in confine]}
    try:
        spec = Spec.model_validate(data, context=context)
    except ValidationError as error:
        issues = format_validation_errors(error)
        if check_paths:
            # a missing file stops the checks across sections (they run on valid fields only): look again
            # without opening anything, so that every error is said at once, not in stages
            try:
                Spec.model_validate(copy.deepcopy(data), context={**context, "check_paths": False})
            except ValidationError as again:
                issues += [issue for issue in format_validation_errors(again) if issue not in issues]
        raise SpecError(source, issues) from None
    if spec.model.family == "spikformer" and source not in _WARNED_ALIAS:
        _WARNED_ALIAS.add(source)
        logging.getLogger("autocompress").warning(
            "%s: model.family 'spikformer' is SpikingJelly 2.0's Spikformer, now named 'spikingjelly_spikformer'; "
            "it is not the network of the official Spikformer checkpoints (use 'spikformer_imagenet' or "
            "'spikformer_cifar' for those)", source)
    return spec


_WARNED_ALIAS: set[str] = set()


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``KEY.PATH=VALUE`` assignments on a parsed spec (VALUE read as YAML: numbers,
    booleans, null, lists and strings as written). Returns a new mapping."""
    data = copy.deepcopy(data)  # plain data, bounded by the parser
    issues = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            issues.append(("", f"--set {item!r}: write KEY.PATH=VALUE, e.g. data.root=/data/imagenet/val"))
            continue
        try:
            value = parse_yaml(text, "--set") if text.strip() else ""
        except DocumentError as error:
            issues.append((key, f"--set {key.strip()}=...: {error}"))
            continue
        except yaml.YAMLError:
            value = text
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                issues.append((key, f"--set {item!r}: {part} is not a section"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if issues:
        raise SpecError(source, issues)
    return data


def load_spec(path: str | os.PathLike, *, check_paths: bool = True, overrides: Sequence[str] = (),
              confine: Sequence[str | os.PathLike] | None = None) -> Spec:
    """Read and validate a spec file, with ``--set`` overrides applied first; raise
    :class:`SpecError` listing every problem. Relative paths in overrides are read from
    the working directory, like any path on a command line. ``confine``: see
    :func:`validate_spec`."""
    path = Path(path)
    data = read_spec_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
        for item in overrides:  # make command-line paths absolute against the working directory
            key = item.partition("=")[0].strip()
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            value = node.get(last) if isinstance(node, dict) else None
            if key in PATH_FIELDS and isinstance(value, str) and value and not value.startswith(REFERENCE_PREFIX) \
                    and "\x00" not in value:
                node[last] = os.path.abspath(os.path.expanduser(value))
    return validate_spec(data, base_dir=path.parent, source=str(path), check_paths=check_paths, confine=confine)




def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec, as a dict."""
    schema = Spec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "autocompress constraint spec"
    return schema


# --------------------------------------------------------------------------- error messages

def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (through Annotated, Optional, Union)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or str(origin) == "types.UnionType":
        return [t for arg in get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _tags(union: Any, field: str) -> set[str]:
    return {tag for member in _unwrap(union) for tag in get_args(member.model_fields[field].annotation)}


# Discriminated unions put the tag into the error location (model.spikformer.args...);
# users never wrote that tag as a key, so it is dropped from the printed path.
_UNION_TAGS = {"model": _tags(ModelSpec, "family"), "strategy": _tags(StrategySpec, "name")}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at ``loc`` (a raw pydantic error location), if any."""
    current: list[Any] = [Spec]
    for part in loc:
        candidates = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
        nxt: list[Any] = []
        for model in candidates:
            if part in model.model_fields:
                nxt += _unwrap(model.model_fields[part].annotation)
        if not nxt:
            # a union tag selects the member whose Literal name/family equals it
            tagged = [
                t for t in current
                if isinstance(t, type) and issubclass(t, BaseModel)
                and any(part in get_args(f.annotation) for k, f in t.model_fields.items() if k in ("name", "family"))
            ]
            if not tagged:
                return None
            nxt = tagged
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


# Members of a plain union appear in locations as labels like "float" or
# "literal['auto']"; they are not keys the user wrote.
_UNION_MEMBER_LABEL = re.compile(r"^(float|int|str|bool|none)$|[\[\]'-]")


def _format_path(loc: tuple) -> str:
    parts = [p for p in loc if isinstance(p, int) or not _UNION_MEMBER_LABEL.search(str(p))]
    if len(parts) >= 2 and parts[0] in _UNION_TAGS and parts[1] in _UNION_TAGS[parts[0]]:
        del parts[1]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def format_validation_errors(error: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(field_path, message)`` pairs a user can act on."""
    issues: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        loc, kind, ctx = tuple(item["loc"]), item["type"], item.get("ctx") or {}
        value = item.get("input")
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            message = f"unknown key '{loc[-1]}'"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
            if allowed:
                message += f" Allowed keys: {', '.join(allowed)}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            field = "family" if loc and loc[0] == "model" else "name"
            message = f"'{ctx.get('tag')}' is not a known {loc[0] if loc else ''} {field}; allowed: {ctx.get('expected_tags')}"
            loc = loc + (field,)
        elif kind == "union_tag_not_found":
            message = f"required key '{ctx.get('discriminator', '').strip(chr(39))}' is missing; allowed values: {', '.join(sorted(_UNION_TAGS.get(loc[0], [])))}"
        elif kind == "literal_error":
            message = f"{short_repr(value)} is not allowed; allowed: {ctx.get('expected')}"
        elif kind in ("value_error", "assertion_error"):
            cause = ctx.get("error")
            message = str(cause if cause is not None else item["msg"])
            if isinstance(cause, FieldError):
                loc = loc + tuple(cause.path.split("."))
        else:
            message = f"{item['msg']} (got {short_repr(value)})"
        path = _format_path(loc)
        if issues and issues[-1][0] == path:  # one line per field: a union's members say "or"
            issues[-1] = (path, f"{issues[-1][1]}; or {message}")
        else:
            issues.append((path, message))
    return issues
