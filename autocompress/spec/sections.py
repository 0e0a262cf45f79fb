"""The spec's smaller sections: constraints, space, strategy, proxy, compression,
evaluation, budget, execution, fine-tuning, energy, latency and output."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autocompress.searching import strategy_options
from autocompress.spec.fields import Seed, Strict, resolve_path
from autocompress.vocabulary import (
    BITS_CHOICES,
)


class AccuracyConstraint(Strict):
    max_drop: float = Field(
        ge=0, le=100,
        description="largest allowed top-1 accuracy drop: points (absolute) or percent of the baseline (relative), "
                    "0 to 100",
    )
    kind: Literal["absolute", "relative"] = Field("absolute", description="absolute: max_drop is in top-1 points; relative: a fraction of the baseline's accuracy")
    confidence: float | None = Field(
        default=0.95, gt=0.5, lt=1,
        description="a candidate is accuracy-feasible only when the upper confidence bound on its drop, at this "
                    "level, is within max_drop (a paired comparison with the baseline image by image: a drop "
                    "measured on a few thousand images is uncertain by a few tenths of a point, and a search that "
                    "keeps the smallest candidate just under the limit keeps one whose drop it underestimated); "
                    "with a held-out split the recommended point passes the same test on the held-out images. "
                    "null: decide on the measured drop (optimistic)",
    )


class MemoryConstraint(Strict):
    min_saving: float | None = Field(
        default=None, ge=0, lt=1, description="fraction of the FP32 footprint to save, e.g. 0.8"
    )
    max_bytes: PositiveInt | None = Field(default=None, description="largest allowed footprint in bytes")

    @model_validator(mode="after")
    def _at_least_one(self) -> MemoryConstraint:
        if self.min_saving is None and self.max_bytes is None:
            raise ValueError("give min_saving (a fraction, e.g. 0.8) and/or max_bytes")
        return self


class EnergyConstraint(Strict):
    max_mj: PositiveFloat | None = Field(default=None, description="largest allowed energy estimate per image, in mJ")
    min_saving: float | None = Field(
        default=None, ge=0, lt=1, description="fraction of the uncompressed model's energy estimate to save, e.g. 0.3")

    @model_validator(mode="after")
    def _at_least_one(self) -> EnergyConstraint:
        if self.max_mj is None and self.min_saving is None:
            raise ValueError("give max_mj (millijoules per image) and/or min_saving (a fraction, e.g. 0.3)")
        return self


class LatencyConstraint(Strict):
    max_ms: PositiveFloat = Field(description="largest allowed median latency of one image (batch 1), milliseconds")


class ConstraintsSpec(Strict):
    accuracy: AccuracyConstraint = Field(description="the accuracy a compressed model may lose")
    memory: MemoryConstraint = Field(description="the memory it must save")
    energy: EnergyConstraint | None = Field(
        default=None, description="a limit on the energy estimate per image (spikes and operations counted on the "
                                  "calibration batch; the energy section prices them)")
    latency: LatencyConstraint | None = Field(
        default=None, description="a limit on the measured latency at batch 1 (needs latency.measure: true)")


class LatencySpec(Strict):
    """Measured latency of each candidate (its compressed model, as exported), at its probe."""

    measure: bool = Field(False, description="time every probed candidate (and the baseline)")
    batch_size: PositiveInt = Field(16, description="the batch size timed besides batch 1")
    repeats: PositiveInt = Field(10, description="timed forward passes per batch size (the median is kept)")
    warmup: NonNegativeInt = Field(2, description="untimed forward passes first")


class EnergySpec(Strict):
    """How the energy estimate prices the counted operations (autocompress.proxy.energy)."""

    ac_pj: PositiveFloat = Field(0.9, description="energy of an accumulate (pJ): 45 nm, 32-bit float add")
    mac_pj: PositiveFloat = Field(4.6, description="energy of a multiply-accumulate (pJ): 45 nm, 32-bit float")
    bit_aware: bool = Field(False, description="price a quantized layer's operations as b-bit integer ones "
                                               "(Horowitz 2014: adds linear, multiplies quadratic in the width)")


# --------------------------------------------------------------------------- space


class SpaceSpec(Strict):
    file: Path | None = Field(
        default=None, description="a search_spaces/*.yaml file; inline choices below override its choices"
    )
    granularity: Literal["network", "stage", "block", "layer"] = Field("block", description="how many layers share one pruning rate and one bit-width: the whole network, a stage, a block or each layer")
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
        return resolve_path(value, info, must_exist=True, kind="search-space file")

    @field_validator("prune_rates", "bits")
    @classmethod
    def _non_empty_sorted(cls, value: list | None) -> list | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one choice, or leave the key out")
            value = sorted(set(value))
        return value


# --------------------------------------------------------------------------- strategy


# Each strategy declares its options model where it is defined (autocompress.searching.strategies);
# a type checker sees their common base, since the union is built from the registry at run time.
if TYPE_CHECKING:
    from autocompress.searching.base import StrategyOptions as StrategySpec
else:
    StrategySpec = Annotated[Union[strategy_options()], Field(discriminator="name")]

# --------------------------------------------------------------------------- the rest


def _auto_or_non_negative(value: Any) -> Any:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"must be 'auto' or a number >= 0 (got {value!r})")
    return float(value)


class ProxySpec(Strict):
    metric: Literal["membrane_drift"] = Field("membrane_drift", description="the proxy: how far the compressed model's membrane potentials drift from the baseline's on the calibration batch")
    threshold: Annotated[Literal["auto"] | Annotated[float, Field(ge=0)], BeforeValidator(_auto_or_non_negative)] = Field(
        "auto", description="gate threshold on the drift: a number, or 'auto' to calibrate it online"
    )
    enabled: bool = Field(True, description="false sends every candidate to full evaluation (no gate)")
    gate: bool = Field(True, description="false: the drift still ranks candidates (probes) but the gate rejects "
                                         "none; every candidate a strategy asks for in full is evaluated")
    logits: bool = Field(True, description="count the model's output (its logits, centred per image) as one more "
                                           "term of the drift, so that quantizing the classification head, which "
                                           "feeds no neuron, shows in it")


class CompressionSpec(Strict):
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


class EvaluationSpec(Strict):
    """How full validations run: sharded over workers, stopped once the decision is certain."""

    early_stopping: Literal["both", "infeasible", "off"] = Field(
        "both", description="stop a candidate's full validation once its accuracy drop is certainly beyond the limit "
                            "(infeasible), or also once it is certainly within it (both; a candidate stopped so that "
                            "would be reported is validated on its remaining images before the search reports it, so "
                            "every reported accuracy is exact), or never (off). true and false, from older specs, "
                            "read as infeasible and off")
    confidence: float = Field(
        0.999, gt=0.5, lt=1.0,
        description="early stopping's confidence, each side: a candidate is stopped on the wrong side of the limit "
                    "(against its whole selection set) with probability below 1 - confidence, however many shards "
                    "are looked at (an anytime-valid sequential test)")

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _older_booleans(cls, value: object) -> object:
        # specs (and stored runs) of versions before the two-sided rule: true stopped only the infeasible side
        return {True: "infeasible", False: "off"}.get(value, value) if isinstance(value, bool) else value
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


class BudgetSpec(Strict):
    max_full_evaluations: PositiveInt = Field(60, description="full validations the search may run (the main cost)")
    max_hours: PositiveFloat | None = Field(None, description="wall-clock limit of the search in hours (over all sessions); null: none")
    max_probes: PositiveInt | None = Field(
        None, description="at most this many probes (proxy evaluations on the calibration batch) in a run, earlier "
                          "sessions included; the search then stops with `probe budget`. null: 100 x "
                          "max_full_evaluations (a backstop for a strategy whose proposals keep coming to no full "
                          "evaluation)")
    probe_cost: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="what one probe counts for against max_full_evaluations, in full evaluations (0: probes "
                         "are not counted; ImageNet: a few thousandths: a probe builds the candidate and runs the 32 "
                         "calibration images of the ImageNet specs, a full evaluation reads 50,000 images)")


class ExecutionSpec(Strict):
    workers: NonNegativeInt = Field(0, description="evaluation workers; 0 evaluates in the driver process")
    ray_address: str | None = Field(
        default=None, description="null starts a local Ray; 'auto' or 'host:port' joins a cluster"
    )
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")] = Field(
        "auto", description="auto picks CUDA when present"
    )
    gpus_per_worker: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="GPUs each Ray worker reserves when it evaluates on CUDA: 1 is a GPU each; 0.5 puts two "
                         "workers on one GPU (small models that leave a GPU idle between batches); not used on the CPU"
    )


CANDIDATE_ID = r"^[0-9a-f]{12}$"


class FinetunePointsSpec(Strict):
    ids: Annotated[list[Annotated[str, Field(pattern=CANDIDATE_ID)]], Field(max_length=64)] = Field(
        default_factory=list, description="fully evaluated candidates to fine-tune, by id (pareto.json's ids)")
    best_feasible: bool = Field(True, description="fine-tune the best feasible point")
    near_misses_within: Annotated[float, Field(ge=0)] | None = Field(
        5.0, description="also the Pareto points whose memory fits but whose accuracy drop exceeds the allowed one "
                         "by at most this many points (null: none)")


class FinetuneDataSpec(Strict):
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
        return resolve_path(value, info, must_exist=True, kind="training data root")


class DistillationSpec(Strict):
    logits: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="weight of the distillation loss on the uncompressed model's logits (KL divergence at "
                         "the temperature, times T^2); the cross-entropy on the labels gets 1 - this")
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(4.0, description="softmax temperature of the distillation loss")
    membrane: Annotated[float, Field(ge=0, le=1000)] = Field(
        1.0, description="weight of matching the membrane potentials of the kept channels to the uncompressed "
                         "model's (each neuron layer's mean squared difference over the teacher's mean square); "
                         "0 turns it off")


class FinetuneSpec(Strict):
    """Recovery fine-tuning of compressed candidates (``autocompress finetune``)."""

    auto: bool = Field(False, description="fine-tune the selected points when the search ends")
    points: FinetunePointsSpec = Field(default_factory=FinetunePointsSpec, description="which points are fine-tuned when none are named")
    epochs: PositiveInt = Field(10, description="training epochs per point")
    batch_size: PositiveInt = Field(64, description="training images per step, over all workers (each of finetune.workers trains on its share)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="the optimizer")
    lr: Annotated[float, Field(gt=0, le=10)] = Field(5e-4, description="peak learning rate")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="the optimizer's weight decay")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="sgd only")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="after the warm-up")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of linear learning-rate warm-up before the cosine decay")
    seed: Seed = 0
    validate_every: NonNegativeInt = Field(
        1, description="epochs between validation accuracies shown as progress (0: only at the end); the last "
                       "epoch is always the result, whatever these say")
    data: FinetuneDataSpec = Field(default_factory=FinetuneDataSpec, description="the training data")
    distillation: DistillationSpec = Field(default_factory=DistillationSpec, description="knowledge distillation from the uncompressed model")
    workers: NonNegativeInt = Field(
        0, description="0 trains in this process; N >= 1 trains data-parallel on N Ray Train workers (one per GPU "
                       "with a GPU device), on execution.ray_address")

    @model_validator(mode="after")
    def _warmup_fits(self) -> FinetuneSpec:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise ValueError(f"finetune.warmup_epochs {self.warmup_epochs} must be below finetune.epochs "
                             f"{self.epochs}")
        return self


class OutputSpec(Strict):
    run_dir: Path | None = Field(default=None, description="where the run is stored; default runs/<name>-<date>-<time> beside the spec")
    report: bool = Field(True, description="draw report.html and its plots when a search or resume ends (about a "
                                           "second and a half for a small run; `autocompress report` draws it later)")

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info, must_exist=False, kind="run folder", confinable=False)
