"""The run store's metadata, one pydantic model a key: the schema of what a run directory
keeps beside its evaluations, and the one place where what older versions wrote is read
into today's shape (the migrations).

:meth:`RunStore.meta` reads a key through its model (migrating it) and returns plain
JSON; :meth:`RunStore.set_meta` validates a value before it is written, so a key without a
model, or a value of the wrong shape, is a bug that fails where it is written, not when a
later session reads it. :meth:`RunStore.get` and :meth:`RunStore.put` are the typed form.

Each model's ``VERSION`` is the layout written today; ``migrate`` lifts what an earlier
version wrote (or what a run started before a key existed lacks) to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, RootModel, model_validator

__all__ = ["META_MODELS", "MetaRecord", "migrate_frozen_spec", "read_meta", "written_meta"]


class MetaRecord(BaseModel):
    """A metadata value: its store key, the layout version it is written in, and the
    migration of older layouts (``migrate``, on the raw JSON, before validation)."""

    model_config = ConfigDict(extra="allow")  # keys a later version adds survive a read and a write back
    KEY: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @classmethod
    def migrate(cls, data: Any) -> Any:
        return data

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return cls.migrate(data)


class Budget(MetaRecord):
    """The run's budget: the spec's, unless a session raised (or lowered) it."""

    KEY: ClassVar[str] = "budget"
    max_full_evaluations: int
    max_hours: float | None = None


class Execution(MetaRecord):
    """Where the run's evaluations run: Ray workers (0: in the driver's process) and the cluster."""

    KEY: ClassVar[str] = "execution"
    workers: int
    ray_address: str | None = None


class ValidationPlan(MetaRecord):
    """The validation order and shards, fixed when the run starts."""

    KEY: ClassVar[str] = "validation"
    images: int
    order_seed: int = 0
    shard_images: int


class SpaceFingerprint(MetaRecord):
    """The search space the run searches: a resume on another space is refused."""

    KEY: ClassVar[str] = "space"
    granularity: str | None = None
    dimensions: list[list[Any]]


class Baseline(MetaRecord):
    """The base model on the validation images: its accuracy and per-image correctness
    (base64 of the packed bits), with what the measurement reported beside them."""

    KEY: ClassVar[str] = "baseline"
    accuracy: float
    per_image: str | None = None


class HeldOutResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    accuracy: float
    correct: int
    total: int
    per_image: str | None = None  # absent in runs measured before the paired held-out test


class Holdout(MetaRecord):
    """The held-out split's measurements: the base model (``baseline``) and Pareto points."""

    KEY: ClassVar[str] = "holdout"
    images: int
    results: dict[str, HeldOutResult] = {}


class StoredConstraints(MetaRecord):
    """The run's constraints (``autocompress.searching.Constraints``), fixed by its baseline."""

    KEY: ClassVar[str] = "constraints"
    baseline_accuracy: float
    baseline_bytes: int
    max_drop_points: float

    @classmethod
    def migrate(cls, data: Any) -> Any:
        # runs before the confidence rule decided on the measured drop: no confidence
        return {"confidence": None, **data} if isinstance(data, dict) else data


def migrate_frozen_spec(data: dict) -> dict:
    """A frozen spec with the settings added after it was frozen, at the values that keep
    the behaviour of its day (a frozen spec holds every setting of its day, so a missing
    key is one of these): a run resumes as it started."""
    data = dict(data)
    for key, value in _SETTINGS_OF_OLDER_RUNS.items():  # key by key: a section may predate some of its settings
        if key not in data:
            data[key] = dict(value)
        elif isinstance(data[key], dict):
            data[key] = {**value, **data[key]}
    strategy = data.get("strategy")
    if isinstance(strategy, dict) and strategy.get("name") in _STRATEGY_SETTINGS_OF_OLDER_RUNS:
        data["strategy"] = {**_STRATEGY_SETTINGS_OF_OLDER_RUNS[strategy["name"]], **strategy}
    return data


# Settings added after runs existed, whose defaults change what a run does.
_SETTINGS_OF_OLDER_RUNS = {
    "compression": {"fold_batchnorm": False, "mse_clipping": False, "recalibrate_batchnorm": False,
                    "importance": "l2", "bias_correction": False},
    "proxy": {"logits": False},  # the drift's logits term: a run mixing both definitions would rank and gate on two scales
    "space": {"outside_blocks": "stage"},  # block granularity's dimensions: a resumed walk must see the same ones
    # validations were not stopped before early stopping existed (a frozen `true` or `false` reads as
    # infeasible or off: the spec's own validator)
    "evaluation": {"early_stopping": "off"},
}
_STRATEGY_SETTINGS_OF_OLDER_RUNS = {"tpe": {"warm_start": 0}, "nsga2": {"warm_start": 0},
                                    "random": {"skip_dominated": False}, "prioritized": {"keep_compressing": False},
                                    "greedy": {"min_step_share": 0.0, "free_share": 0.0, "max_failed_trades": 0},
                                    "beam": {"min_step_share": 0.0}}


class FrozenSpec(RootModel[dict[str, Any]]):
    """The spec the run was started with (validated by :func:`autocompress.spec.validate_spec`
    when a session reads it back), migrated to the settings of its day."""

    KEY: ClassVar[str] = "spec"

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        return migrate_frozen_spec(data) if isinstance(data, dict) else data


def _plain(key: str, kind: Any) -> type[RootModel]:
    model = RootModel[kind]
    return type(f"Meta_{key}", (model,), {"__module__": __name__, "KEY": key,
                                          "__annotations__": {"KEY": ClassVar[str]}})


# key -> its model. Keys with a plain JSON shape (a string, a mapping of names) get a root model.
META_MODELS: dict[str, type[BaseModel]] = {model.KEY: model for model in (
    Budget, Execution, ValidationPlan, SpaceFingerprint, Baseline, Holdout, StoredConstraints, FrozenSpec,
    _plain("format", str), _plain("created_at", float), _plain("spec_file", str | None),
    _plain("spec_dir", str | None), _plain("limits", dict[str, int | float]), _plain("space_units", dict[str, list[str]]),
    _plain("baseline_energy", dict[str, Any]),
    _plain("finetune", dict[str, dict[str, Any]]),  # {point id: its fine-tuning entry}
)}


def read_meta(key: str, value: Any) -> Any:
    """A stored value read through its model (migrated), as plain JSON; a key no model
    knows (written by a later version) is returned as it is."""
    model = META_MODELS.get(key)
    if model is None or value is None:
        return value
    return model.model_validate(value).model_dump(mode="json", exclude_unset=True)


def written_meta(key: str, value: Any) -> Any:
    """``value`` checked against the model of ``key`` before it is written, as plain JSON."""
    model = META_MODELS.get(key)
    if model is None:
        raise KeyError(f"run store meta key {key!r} has no model in autocompress.engine.meta")
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_unset=True)
    return model.model_validate(value).model_dump(mode="json", exclude_unset=True)
