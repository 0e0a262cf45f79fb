"""The whole spec (``Spec``): its sections, and the checks that need more than one
(the model fits the data, the reference fits the model, the run folder)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, get_args

from pydantic import (
    Field,
    ValidationInfo,
    model_validator,
)

from autocompress.recipes import check_reference_fits
from autocompress.searching import strategy_options
from autocompress.spec.data import DataSpec
from autocompress.spec.fields import FieldError, Strict
from autocompress.spec.model import ModelSpec, family_info, model_section_union, on_families_changed
from autocompress.spec.sections import (
    BudgetSpec,
    CompressionSpec,
    ConstraintsSpec,
    EnergySpec,
    EvaluationSpec,
    ExecutionSpec,
    FinetuneSpec,
    LatencySpec,
    OutputSpec,
    ProxySpec,
    SpaceSpec,
    StrategySpec,
)
from autocompress.vocabulary import (
    DATASETS,
    REFERENCE_PREFIX,
)


class Spec(Strict):
    """A constraint spec: the model, the data, the constraints, and how to search."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)] = Field(
        description="run name: letters, digits, '.', '_' and '-'"
    )
    model: ModelSpec = Field(description="the network to compress: its family, sizes and checkpoint")
    data: DataSpec = Field(default_factory=DataSpec, description="the validation data, its preprocessing, the calibration batch and the held-out split")
    constraints: ConstraintsSpec = Field(description="what a compressed model must meet: accuracy kept, memory saved, and optionally energy and latency")
    space: SpaceSpec = Field(default_factory=SpaceSpec, description="the search space: per-group pruning rates and per-layer bit-widths")
    strategy: StrategySpec = Field(default_factory=lambda: strategy_options("greedy")(name="greedy"),
                                   description="how candidates are proposed (greedy, beam, prioritized, tpe, nsga2, random, halving)")
    proxy: ProxySpec = Field(default_factory=ProxySpec, description="the membrane-drift gate in front of full validation")
    compression: CompressionSpec = Field(default_factory=CompressionSpec, description="how a candidate is built (importance, clipping, folding)")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="full validation: sharding, early stopping, precision")
    budget: BudgetSpec = Field(default_factory=BudgetSpec, description="when the search stops")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description="where it runs: workers, Ray cluster, device")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec, description="recovery fine-tuning of near misses (autocompress finetune)")
    energy: EnergySpec = Field(default_factory=EnergySpec, description="the energy model: picojoules per operation")
    latency: LatencySpec = Field(default_factory=LatencySpec, description="latency measurement of candidates")
    output: OutputSpec = Field(default_factory=OutputSpec, description="the run directory and the report")

    @model_validator(mode="after")
    def _model_fits_data(self, info: ValidationInfo) -> Spec:
        shard = self.evaluation.shard_images
        if shard is not None and shard % self.data.batch_size:
            raise ValueError(f"evaluation.shard_images {shard} is not a multiple of data.batch_size "
                             f"{self.data.batch_size}: a shard is whole batches, so that a sharded validation batches "
                             f"exactly as one pass does; use {max(1, round(shard / self.data.batch_size)) * self.data.batch_size}")
        args = self.model.args
        if family_info(self.model.family).sized:  # its args are the SViT sizes: they must fit the data
            if "image_size" not in args.model_fields_set:  # unset: the data's size (one --set changes both)
                args.image_size = self.data.image_size
                try:
                    if hasattr(args, "_shapes_fit"):
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


def _rebuild_spec() -> None:
    """A family declared after import (``autocompress.models.register_family``): the spec's
    ``model`` section becomes the union of every declared family, and the schema with it."""
    field = Spec.model_fields["model"]
    field.annotation = get_args(model_section_union())[0]  # the Union inside Annotated[..., Field(discriminator)]
    field.discriminator = "family"
    Spec.model_rebuild(force=True)


on_families_changed(_rebuild_spec)
