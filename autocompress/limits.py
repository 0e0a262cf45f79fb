"""Caps on every size a spec controls, checked before anything is built.

A spec can ask for things that exhaust a machine long before any error shows: a
million time steps, a 65,536-wide model with 1,000 blocks, 100,000 data-loading
processes, a batch of 10^12 images. Each such size has a cap here, with a default that
suits one GPU node and admits every published SViT (Spikformer-8-768, SDT-8-768 at
224x224 with T=4 are far inside). The operator of a machine or a service raises a cap
(``--limit NAME=VALUE`` on the command line and on ``autocompress serve``); whoever
submits a spec cannot.

The model's parameter count is computed before the model is built: the families are
built on PyTorch's ``meta`` device (shapes only, no memory); a custom factory is tried
there too, in the process that will run the search (never in the HTTP service).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from autocompress.errors import SpecError, UserInputError
from autocompress.spec import family_info

__all__ = ["LIMITS", "Limits", "check_limits", "finetune_sizes"]

@dataclass(frozen=True)
class LimitInfo:
    default: float
    description: str
    integer: bool = True


LIMITS: dict[str, LimitInfo] = {
    "model.T": LimitInfo(64, "time steps (model.args.T, or a custom model's time_steps)"),
    "model.image_size": LimitInfo(1024, "pixels of input resolution (model.args.image_size, data.image_size)"),
    "model.embed_dims": LimitInfo(4096, "embedding channels"),
    "model.depths": LimitInfo(64, "transformer blocks"),
    "model.num_heads": LimitInfo(64, "attention heads"),
    "model.num_classes": LimitInfo(100_000, "output classes"),
    "model.in_channels": LimitInfo(16, "input channels"),
    "model.mlp_ratio": LimitInfo(16, "(MLP hidden width over the embedding width)", integer=False),
    "model.parameters": LimitInfo(1_000_000_000, "parameters and buffers (counted before the model is built)"),
    "data.batch_size": LimitInfo(1024, "images per evaluation batch"),
    "data.workers": LimitInfo(32, "data-loading processes"),
    "data.calibration.size": LimitInfo(1024, "calibration images (every worker keeps their membrane potentials)"),
    "space.choices": LimitInfo(32, "choices in one list (space.prune_rates, space.bits, sensitivity_rates)"),
    "strategy.beam_width": LimitInfo(64, "configurations in the beam"),
    "strategy.population_size": LimitInfo(1000, "members of the NSGA-II population"),
    "strategy.n_startup_trials": LimitInfo(10_000, "TPE start-up trials"),
    "budget.max_full_evaluations": LimitInfo(100_000, "full evaluations"),
    "budget.max_hours": LimitInfo(24 * 31, "hours", integer=False),
    "budget.max_probes": LimitInfo(10_000_000, "probes (proxy evaluations)"),
    "execution.workers": LimitInfo(64, "evaluation workers (Ray actors)"),
    "finetune.epochs": LimitInfo(1000, "fine-tuning epochs"),
    "finetune.workers": LimitInfo(64, "fine-tuning workers (Ray Train)"),
    "latency.repeats": LimitInfo(1000, "timed forward passes per candidate and batch size"),
}


def number(value: float) -> str:
    """1000000 -> '1,000,000'; 1.5 -> '1.5'."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


class Limits:
    """The caps in force: the defaults, with the operator's overrides."""

    def __init__(self, overrides: dict[str, float] | None = None):
        self.values = {name: info.default for name, info in LIMITS.items()}
        for name, value in (overrides or {}).items():
            if name not in LIMITS:
                raise UserInputError(f"--limit {name}: no such limit; known: {', '.join(LIMITS)}")
            self.values[name] = value

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def merged(self, stored: dict[str, float] | None) -> Limits:
        """These caps over ``stored`` ones (a run's, from when it started): a cap given now
        wins, one given then and not now still holds."""
        return Limits({**(stored or {}), **self.overrides()})

    def overrides(self) -> dict[str, float]:
        """The caps that differ from the defaults (what a job must be told)."""
        return {name: value for name, value in self.values.items() if value != LIMITS[name].default}

    def as_options(self) -> list[str]:
        """``--limit NAME=VALUE`` arguments that recreate these limits in another process."""
        return [arg for name, value in self.overrides().items() for arg in ("--limit", f"{name}={value:g}")]

    @classmethod
    def parse(cls, items: Iterable[str]) -> Limits:
        """From ``NAME=VALUE`` strings (the ``--limit`` option)."""
        overrides: dict[str, float] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or name not in LIMITS:
                raise UserInputError(f"--limit {item!r}: write NAME=VALUE with NAME one of: {', '.join(LIMITS)}")
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value <= 0 or (LIMITS[name].integer and value != int(value)):
                kind = "a positive integer" if LIMITS[name].integer else "a positive number"
                raise UserInputError(f"--limit {item!r}: the value must be {kind}")
            overrides[name] = int(value) if LIMITS[name].integer else value
        return cls(overrides)


def finetune_sizes(finetune) -> list[tuple[str, str, Any]]:
    """``(limit name, field path, value)`` for the sizes a ``finetune`` section sets (the
    service checks a fine-tuning request's settings by these too)."""
    return [("finetune.epochs", "finetune.epochs", finetune.epochs),
            ("data.batch_size", "finetune.batch_size", finetune.batch_size),
            ("finetune.workers", "finetune.workers", finetune.workers)]


def _sizes(spec) -> list[tuple[str, str, Any]]:
    """``(limit name, field path, value)`` for every size the spec sets."""
    sizes: list[tuple[str, str, Any]] = []
    model = spec.model
    if not family_info(model.family).sized:  # a custom factory's args are its own: only its time steps
        if getattr(model, "time_steps", None) is not None:
            sizes.append(("model.T", "model.time_steps", model.time_steps))
    else:
        for field in ("T", "image_size", "embed_dims", "depths", "num_heads", "num_classes", "in_channels",
                      "mlp_ratio"):
            sizes.append((f"model.{field}", f"model.args.{field}", getattr(model.args, field)))
    data = spec.data
    sizes += [
        ("model.image_size", "data.image_size", data.image_size),
        ("data.batch_size", "data.batch_size", data.batch_size),
        ("data.workers", "data.workers", data.workers),
        ("data.calibration.size", "data.calibration.size", data.calibration.size),
        ("budget.max_full_evaluations", "budget.max_full_evaluations", spec.budget.max_full_evaluations),
        ("execution.workers", "execution.workers", spec.execution.workers),
        *finetune_sizes(spec.finetune),
        ("latency.repeats", "latency.repeats", spec.latency.repeats + spec.latency.warmup),
        ("data.batch_size", "latency.batch_size", spec.latency.batch_size),
    ]
    if spec.budget.max_hours is not None:
        sizes.append(("budget.max_hours", "budget.max_hours", spec.budget.max_hours))
    if spec.budget.max_probes is not None:
        sizes.append(("budget.max_probes", "budget.max_probes", spec.budget.max_probes))
    for field in ("prune_rates", "bits"):
        if getattr(spec.space, field) is not None:
            sizes.append(("space.choices", f"space.{field}", len(getattr(spec.space, field))))
    strategy = spec.strategy
    for field, limit in (("beam_width", "strategy.beam_width"), ("population_size", "strategy.population_size"),
                         ("n_startup_trials", "strategy.n_startup_trials"),
                         ("sensitivity_rates", "space.choices")):
        if hasattr(strategy, field):
            value = getattr(strategy, field)
            sizes.append((limit, f"strategy.{field}", len(value) if isinstance(value, list) else value))
    return sizes


def check_limits(spec, limits: Limits | None = None, *, source: str = "spec", hint: str | None = None,
                 count_custom: bool = True, session: Iterable[tuple[str, str, Any]] = ()) -> None:
    """Raise SpecError naming every size of ``spec`` above its cap: the one check every
    entry point runs (validate, search, resume, fine-tune, the service, the Python API).

    ``session``: ``(limit name, what sets it, value)`` of a session's overrides of the
    spec (``--max-full-evaluations``, ``--workers``; None: not overridden).
    ``hint`` says how to raise a cap (the command line and the service say different
    things). The parameter count is checked once the other sizes pass, so that its
    meta-device build is itself bounded; ``count_custom`` false skips custom models
    (the service never runs factory code).
    """
    limits = limits or Limits()
    hint = hint or "raise the cap with --limit {name}=VALUE if this machine can take it"
    issues = []
    for name, loc, value in [*_sizes(spec), *(size for size in session if size[2] is not None)]:
        if value > limits[name]:
            issues.append((loc, f"{number(value)} is above the limit of {number(limits[name])} "
                                f"{LIMITS[name].description}; " + hint.format(name=name)))
    if not issues and (count_custom or spec.model.family != "custom"):
        from autocompress.models import parameter_count

        count = parameter_count(spec.model)
        if count is not None and count > limits["model.parameters"]:
            issues.append(("model", f"the model has {count:,} parameters and buffers, above the limit of "
                                    f"{number(limits['model.parameters'])}; " + hint.format(name="model.parameters")))
    if issues:
        raise SpecError(source, issues)
