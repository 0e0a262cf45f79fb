"""``autocompress init``: a complete, commented spec for a user's own checkpoint and data.

The model section is what :func:`~autocompress.models.inspect_checkpoint` reads from the
checkpoint (family, arguments, the transform preset of the official evaluation); the data
section is what the data folder holds (an ImageNet-layout folder, CIFAR-10's batches or
Fashion-MNIST's IDX files), counted; the constraints, strategy, budget, calibration batch and
held-out split are chosen for that size. The text is written with a comment on each choice
and validated before it is written, so that it searches as written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import UserInputError
from autocompress.vocabulary import DATASETS, TRANSFORM_PRESETS

# below this many images a held-out split leaves too few on either side to decide with confidence
HOLDOUT_FROM = 2_000


@dataclass
class DataFound:
    """What a data folder holds."""

    dataset: str  # imagefolder, cifar10 or fashion_mnist
    root: Path
    images: int  # validation images
    classes: int
    train_root: Path | None = None  # a training folder beside it (recovery fine-tuning)


def inspect_data(root: str | os.PathLike[str]) -> DataFound:
    """Which dataset layout ``root`` is, and how many validation images and classes it holds."""
    from autocompress.data.cifar10 import holds_cifar10
    from autocompress.data.fashion_mnist import SPLITS, holds_fashion_mnist
    from autocompress.data.imagefolder import scan_image_folder

    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise UserInputError(f"--data {root}: not a folder; give an ImageNet-layout validation folder "
                             "(DIR/<class>/<image>), CIFAR-10's folder or Fashion-MNIST's")
    if holds_cifar10(path):
        return DataFound("cifar10", path, 10_000, DATASETS["cifar10"].classes or 10)  # its test batch
    if holds_fashion_mnist(path):
        return DataFound("fashion_mnist", path, SPLITS["test"][2], DATASETS["fashion_mnist"].classes or 10)
    classes, samples = scan_image_folder(path, where="--data")
    found = DataFound("imagefolder", path, len(samples), len(classes))
    for name in ("train", "training"):
        sibling = path.parent / name
        if sibling != path and sibling.is_dir():
            found.train_root = sibling
    return found


def _name(checkpoint: Path, data: Path) -> str:
    stem = checkpoint.name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{data.name}").strip("-.")[:60]
    return name or "my-model"


def _budget(images: int) -> tuple[int, str]:
    if images >= 20_000:
        return 150, "ImageNet-scale: about 0.9 h on 8 A100s for Spikformer-8-512 (experiments/bench/RESULTS.md)"
    if images >= 2_000:
        return 100, "a full evaluation reads every selection image once"
    return 60, "small data: each full evaluation is cheap"


def spec_text(checkpoint: str | os.PathLike[str], data: str | os.PathLike[str], *, preset: str | None = None,
              ema: bool = False) -> str:
    """The commented YAML of a spec for ``checkpoint`` on ``data`` (not yet validated)."""
    from autocompress.models import inspect_checkpoint
    from autocompress.searching.early import drop_upper_bound

    if preset is not None and preset not in TRANSFORM_PRESETS:
        raise UserInputError(f"--preset {preset}: one of {', '.join(TRANSFORM_PRESETS)}")
    found = inspect_checkpoint(checkpoint, ema=ema)
    if found["model"] is None:
        determined = ", ".join(f"{key} {value}" for key, value in found["determined"].items())
        raise UserInputError(
            f"--checkpoint {checkpoint}: the weights determine {determined or 'nothing'} but not "
            f"{', '.join(found['undetermined'])}, so no model section can be written; "
            f"`autocompress inspect-checkpoint {checkpoint}` says what it found. Write the spec's model section by "
            "hand (family and args), e.g. from experiments/imagenet/joint.yaml")
    data_found = inspect_data(data)
    model: dict[str, Any] = dict(found["model"])
    args = dict(model["args"])
    classes = args.get("num_classes")
    if data_found.dataset != "imagefolder" and classes not in (None, data_found.classes):
        raise UserInputError(f"--data {data}: {data_found.dataset} has {data_found.classes} classes; the checkpoint's "
                             f"model has {classes} outputs")
    if data_found.dataset == "imagefolder" and classes is not None and data_found.classes > classes:
        raise UserInputError(f"--data {data}: {data_found.classes} class folders, more than the model's {classes} "
                             "outputs; give the validation folder the model was trained for")
    info = DATASETS[data_found.dataset]
    image_size = args.get("image_size") or info.default_image_size or 224
    preset = preset or found.get("transform_preset") or info.default_preset
    images = data_found.images
    large = image_size >= 160
    calibration = max(2, min(32 if large else 64, images // 8))
    holdout = 0.5 if images >= HOLDOUT_FROM else 0.0
    budget, budget_note = _budget(images)
    checked_in = ("the weights determine the architecture"
                  + (f"; from the saved training arguments: {', '.join(found['from_training_args'])}"
                     if found["from_training_args"] else "")
                  + (f"; published defaults, check them: {', '.join(found['assumed'])}" if found["assumed"] else ""))
    args_yaml = yaml.safe_dump(args, default_flow_style=True, width=1000).strip()
    selection = images - (calibration if data_found.dataset == "imagefolder" else 0)
    selection = round(selection * (1 - holdout))
    floor = drop_upper_bound(0, 0, selection, 0.95)  # the bound on a candidate that matches the baseline
    certifiable = floor <= 1.0
    lines = [
        f"# Written by `autocompress init` for {Path(checkpoint).name} on {data_found.root}.",
        f"# The checkpoint: {found['layout_description']}, {found['variant']}, {found['parameters']:,} parameters.",
        "# Check it with `autocompress validate THIS_FILE`, measure the baseline with `autocompress evaluate THIS_FILE`,",
        "# search with `autocompress search THIS_FILE`. Every field: docs/reference/spec.md.",
        f"name: {_name(Path(checkpoint), data_found.root)}",
        "",
        "model:",
        f"  family: {model['family']}",
        f"  args: {args_yaml}   # {checked_in}",
        f"  checkpoint: {Path(checkpoint).expanduser().resolve()}   # read with weights only (no pickle)"
        + ("; official layout, converted on load" if found.get("conversion") else ""),
    ]
    if ema:
        lines.append("  ema: true   # the EMA weights (state_dict_ema)")
    lines += [
        "",
        "data:",
        f"  dataset: {data_found.dataset}",
        f"  root: {data_found.root}   # {images:,} validation images, {data_found.classes} classes",
        f"  image_size: {image_size}",
        f"  transform: {{preset: {preset}}}   # the evaluation preprocessing the checkpoint was published with",
        f"  calibration: {{size: {calibration}, seed: 0}}   # the proxy's batch"
        + (" (taken from the validation folder and left out of validation; calibration.root: a training folder "
           "instead)" if data_found.dataset == "imagefolder" else ""),
        f"  validation: {{holdout: {holdout}}}   "
        + ("# the search decides on half the images; its Pareto points are measured once on the other half"
           if holdout else f"# fewer than {HOLDOUT_FROM:,} images: no held-out split (too few to certify on half)"),
        f"  batch_size: {64 if large else 128}",
        f"  workers: {min(8, os.cpu_count() or 1) if data_found.dataset == 'imagefolder' else 0}   # data-loading processes",
        "",
        "constraints:",
        ("  accuracy: {max_drop: 1.0, kind: absolute}   # top-1 points below the baseline, at 95 % confidence"
         if certifiable else
         "  accuracy: {max_drop: 1.0, kind: absolute, confidence: null}   # top-1 points below the baseline; "
         f"{selection} images cannot show a drop within 1 point at 95 % confidence (a perfect match is bounded "
         f"at +{floor:.1f}), so the measured drop decides (optimistic)"),
        "  memory: {min_saving: 0.75}                  # of the FP32 footprint (8-bit weights alone save 75 %)",
        "",
        "space:",
        "  search: joint          # structured pruning and mixed-precision quantization together",
        "  granularity: block",
        "  prune_rates: [0.0, 0.125, 0.25, 0.375, 0.5]",
        "  bits: [2, 3, 4, 5, 6, 8, 16, 32]",
        "",
        "strategy: {name: greedy, seed: 0}   # others: beam, prioritized, tpe, nsga2, random (docs/reference/strategies.md)",
        "proxy: {metric: membrane_drift, threshold: auto}",
        f"budget: {{max_full_evaluations: {budget}}}   # {budget_note}; max_hours caps the time",
        "execution: {workers: 0, device: auto}   # workers: Ray workers, one per GPU (e.g. 8 on an 8-GPU node)",
    ]
    if data_found.train_root is not None:
        lines += ["", "# recovery fine-tuning of near misses after the search (`autocompress finetune RUN_DIR`)",
                  f"finetune: {{epochs: 3, data: {{root: {data_found.train_root}}}}}"]
    if selection < 100:
        lines.insert(4, f"# Note: {selection} selection images is few; the accuracy figures are coarse "
                        f"(one image is {100 / max(selection, 1):.2g} points).")
    return "\n".join(lines) + "\n"


def write_spec(checkpoint: str | os.PathLike[str], data: str | os.PathLike[str], out: str | os.PathLike[str], *,
               preset: str | None = None, ema: bool = False, force: bool = False) -> Path:
    """Write :func:`spec_text` to ``out`` after validating it; refuse to replace a file
    unless ``force``. Returns the path written."""
    from autocompress.atomic import atomic_write
    from autocompress.spec import parse_spec_text, validate_spec

    target = Path(out).expanduser().resolve()
    if target.exists() and not force:
        raise UserInputError(f"--out {out}: the file exists; choose another name or pass --force to replace it")
    text = spec_text(checkpoint, data, preset=preset, ema=ema)
    validate_spec(parse_spec_text(text, str(target)), base_dir=target.parent, source=str(target))
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text))
