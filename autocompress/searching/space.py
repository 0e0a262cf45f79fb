"""The search space: units, their choices, and the granularity that ties them together.

A *unit* is one thing a candidate can change: a channel group (pruning rate) or a
layer's weight tensor (bit-width). A *dimension* is one coordinate of the short vector
a strategy searches; the granularity maps each dimension onto units:

- ``network``: one pruning rate for every group and one bit-width for every layer;
- ``stage``: one per stage (stem, attention, mlp, head, and residual if searched);
- ``block``: one per transformer block; each unit outside the blocks (the stem's
  layers and channel groups, the head) is a dimension of its own: they are few, and
  they differ most (on the Fashion-MNIST reference the first two stem convolutions,
  2 % of the stem, lose 0.7 points at 4 bits where the positional-encoding
  convolution, 60 % of it, loses nothing at 2 bits; one stem dimension held the whole
  stem at 4 bits; ``outside_blocks: stage`` maps them by stage, as before 2026-12-03);
- ``layer``: one per unit.

Choices are ordered from the baseline (rate 0, 32 bits) to the most aggressive, so a
*configuration* is a tuple of choice indices, all 0 at the baseline, and "one notch
more" is index + 1.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from autocompress.vocabulary import BITS_CHOICES

UnitKind = Literal["prune", "bits"]
Config = tuple[int, ...]

MAX_CHOICES = 64
DEFAULT_PRUNE_RATES = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
DEFAULT_BITS = (32, 16, 8, 6, 5, 4, 3, 2)


@dataclass(frozen=True)
class Candidate:
    """Per-unit choices; units not named keep the baseline. Hashable, JSON round-trips,
    with a stable id."""

    prune: tuple[tuple[str, float], ...] = ()
    bits: tuple[tuple[str, int], ...] = ()

    @classmethod
    def create(cls, prune: Mapping[str, float] | None = None, bits: Mapping[str, int] | None = None) -> Candidate:
        return cls(
            prune=tuple(sorted((k, float(v)) for k, v in (prune or {}).items() if v != 0)),
            bits=tuple(sorted((k, int(v)) for k, v in (bits or {}).items() if v != 32)),
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"prune": dict(self.prune), "bits": dict(self.bits)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Candidate:
        return cls.create(data.get("prune"), data.get("bits"))

    @property
    def id(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def is_baseline(self) -> bool:
        return not self.prune and not self.bits


@dataclass(frozen=True)
class Unit:
    name: str  # channel-group name (prune) or layer path (bits)
    kind: UnitKind
    stage: str
    block: int | None
    size: int  # parameters


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: UnitKind
    units: tuple[str, ...]
    choices: tuple[float, ...] | tuple[int, ...]
    size: int  # parameters of its units


@dataclass
class SpaceDefinition:
    """What a search_spaces/*.yaml file (with the spec's inline overrides) says."""

    prune_kinds: tuple[str, ...] = ("stem", "attention_qk", "attention_v", "attention_qkv", "mlp", "traced")
    prune_rates: tuple[float, ...] = DEFAULT_PRUNE_RATES
    bits_layers: tuple[str, ...] = ("*",)
    bits: tuple[int, ...] = DEFAULT_BITS
    stages: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> glob patterns
    block_pattern: str | None = None
    search: Literal["joint", "prune", "quantize"] = "joint"
    granularity: Literal["network", "stage", "block", "layer"] = "block"
    outside_blocks: Literal["unit", "stage"] = "unit"  # at block granularity: one dimension each, or by stage

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "search space") -> SpaceDefinition:
        allowed = {"family", "prune", "bits", "stages", "block_pattern"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        prune, bits = dict(data.get("prune") or {}), dict(data.get("bits") or {})
        definition = cls(
            prune_kinds=tuple(prune.get("kinds", cls.prune_kinds)),
            prune_rates=tuple(float(r) for r in prune.get("rates", DEFAULT_PRUNE_RATES)),
            bits_layers=tuple(bits.get("layers", ("*",))),
            bits=tuple(int(b) for b in bits.get("choices", DEFAULT_BITS)),
            stages={k: tuple(v) for k, v in (data.get("stages") or {}).items()},
            block_pattern=data.get("block_pattern"),
        )
        definition.prune_rates = _ordered(definition.prune_rates, baseline=0.0, reverse=False)
        definition.bits = _ordered(definition.bits, baseline=32, reverse=True)
        if not all(0 <= rate < 1 for rate in definition.prune_rates):
            raise ValueError(f"{source}: prune rates are fractions in [0, 1), got {list(definition.prune_rates)}")
        if not set(definition.bits) <= set(BITS_CHOICES):
            raise ValueError(f"{source}: bit-widths must be among {list(BITS_CHOICES)}, got {list(definition.bits)}")
        for name, values in (("prune.rates", definition.prune_rates), ("bits.choices", definition.bits)):
            if len(values) > MAX_CHOICES:
                raise ValueError(f"{source}: {name} lists {len(values)} choices; at most {MAX_CHOICES}")
        return definition


def _ordered(values: Sequence, *, baseline, reverse: bool) -> tuple:
    """Choices from the baseline to the most aggressive, the baseline always included."""
    return tuple(sorted(set(values) | {baseline}, reverse=reverse))


def _stage_of(name: str, kind: str, definition: SpaceDefinition) -> str:
    for stage, patterns in definition.stages.items():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return stage
    return {"residual": "residual", "stem": "stem", "mlp": "mlp"}.get(kind, "attention" if kind.startswith("attention") else "other")


def _block_of(name: str, definition: SpaceDefinition) -> int | None:
    if not definition.block_pattern:
        return None
    match = re.search(definition.block_pattern, name)
    return int(match.group(1)) if match else None


class SearchSpace:
    """Units and dimensions of one model under one space definition."""

    def __init__(self, units: Sequence[Unit], definition: SpaceDefinition):
        self.definition = definition
        self.units = {unit.name + ":" + unit.kind: unit for unit in units}
        self.granularity = definition.granularity
        dims: dict[str, list[Unit]] = {}
        for unit in units:
            if self.granularity == "network":
                key = f"network.{unit.kind}"
            elif self.granularity == "stage":
                key = f"{unit.stage}.{unit.kind}"
            elif self.granularity == "block":
                if unit.block is not None:
                    key = f"block{unit.block}.{unit.kind}"
                elif definition.outside_blocks == "stage":
                    key = f"{unit.stage}.{unit.kind}"
                else:
                    key = f"{unit.kind}:{unit.name}"
            else:
                key = f"{unit.kind}:{unit.name}"
            dims.setdefault(key, []).append(unit)
        self.dims = [
            Dimension(
                name=key, kind=members[0].kind, units=tuple(u.name for u in members),
                choices=definition.prune_rates if members[0].kind == "prune" else definition.bits,
                size=sum(u.size for u in members),
            )
            for key, members in dims.items()
        ]
        if not self.dims:
            raise ValueError("the search space has no units: check space.search and the space file's kinds and layers")
        if all(len(dim.choices) == 1 for dim in self.dims):
            raise ValueError(f"the search space offers nothing but the baseline (prune rates "
                             f"{list(definition.prune_rates)}, bits {list(definition.bits)}); give prune rates "
                             "above 0 or bit-widths below 32")

    @classmethod
    def build(cls, groups, layers: Mapping[str, int], definition: SpaceDefinition) -> SearchSpace:
        """Units from a model's channel groups and quantizable layers (``{path: weights}``)."""
        units: list[Unit] = []
        if definition.search in ("joint", "prune"):
            units += [
                Unit(g.name, "prune", _stage_of(g.name, g.kind, definition), _block_of(g.name, definition), g.params)
                for g in groups if g.kind in definition.prune_kinds
            ]
        if definition.search in ("joint", "quantize"):
            units += [
                Unit(path, "bits", _stage_of(path, "layer", definition), _block_of(path, definition), size)
                for path, size in layers.items()
                if any(fnmatch.fnmatchcase(path, p) for p in definition.bits_layers)
            ]
        return cls(units, definition)

    # ------------------------------------------------------------------ configurations

    def __len__(self) -> int:
        return len(self.dims)

    def baseline(self) -> Config:
        return (0,) * len(self.dims)

    def candidate(self, config: Config) -> Candidate:
        """The per-unit candidate a configuration stands for."""
        prune: dict[str, float] = {}
        bits: dict[str, int] = {}
        for dim, index in zip(self.dims, config, strict=True):
            value = dim.choices[index]
            target = prune if dim.kind == "prune" else bits
            for unit in dim.units:
                target[unit] = value
        return Candidate.create(prune, bits)

    def neighbours(self, config: Config, frozen: frozenset[int] = frozenset()) -> list[tuple[int, Config]]:
        """``(dimension, configuration)`` for every one-notch-more-aggressive move."""
        moves = []
        for d, dim in enumerate(self.dims):
            if d not in frozen and config[d] + 1 < len(dim.choices):
                moves.append((d, config[:d] + (config[d] + 1,) + config[d + 1 :]))
        return moves

    def cardinality(self) -> int:
        total = 1
        for dim in self.dims:
            total *= len(dim.choices)
        return total

    def describe(self) -> str:
        return f"{len(self.dims)} dimensions over {len(self.units)} units at {self.granularity} granularity"
