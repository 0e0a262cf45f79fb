"""Prioritized (PrimeSVT, generalised): sensitivity first, then largest units first.

1. Sensitivity: every dimension is probed alone at the spec's ``sensitivity_rates``
   (fractions of its choice range: 0.5 is half-way to its most aggressive choice).
2. Dimensions are ordered from largest (parameters) to smallest; ties go to the one
   with the lower sensitivity signal.
3. Each dimension in turn is pushed to the most aggressive choice that keeps the
   constraints, trying choices from the most aggressive down (full evaluations through
   the gate, so hopeless choices cost only a probe once the gate is calibrated). A
   choice beyond the first level whose sensitivity probe already broke the accuracy
   limit (known when the proxy is off) is not tried.
4. With ``keep_compressing`` (the default) it ends once every dimension has been
   visited: the smallest footprint within the accuracy limit. With
   ``keep_compressing: false`` it stops, as PrimeSVT does, as soon as a compressed
   candidate meets the memory goal (an uncompressed model that meets it does not count).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from autocompress.searching.base import Strategy, StrategyOptions, register_strategy
from autocompress.searching.results import Request, Result
from autocompress.searching.space import Config


class PrioritizedOptions(StrategyOptions):
    """PrimeSVT: sensitivity per unit, then prune largest-first under the constraints."""

    name: Literal["prioritized"] = Field(description="the strategy (each takes its own options besides seed)")
    sensitivity_rates: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        description="how far along each dimension's choices it is probed alone, to rank the dimensions by sensitivity")
    keep_compressing: bool = Field(
        True, description="go on through every dimension after the memory goal is met (false: stop there, as "
                          "PrimeSVT does)")


@register_strategy("prioritized", PrioritizedOptions)
class PrioritizedStrategy(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.levels: dict[int, list[int]] = {
            d: sorted({max(1, round(rate * (len(dim.choices) - 1))) for rate in self.options.sensitivity_rates})
            for d, dim in enumerate(self.space.dims)
        }
        self.sensitivity: dict[tuple[int, int], Result] = {}
        self.pending: set[tuple[int, int]] = set()
        self.order: list[int] | None = None
        self.current: Config = self.space.baseline()
        self.current_bytes = self.constraints.baseline_bytes
        self.current_energy = self.constraints.baseline_energy_mj
        self.tries: list[int] = []  # choice indices left to try for the dimension at the head of order
        self.awaiting: Config | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def _single(self, d: int, index: int) -> Config:
        base = self.space.baseline()
        return base[:d] + (index,) + base[d + 1 :]

    def ask(self, n: int) -> list[Request]:
        if self._done or self.awaiting is not None:
            return []
        if self.order is None:
            todo = [(d, i) for d, levels in self.levels.items() for i in levels if (d, i) not in self.sensitivity]
            if todo:
                fresh = [key for key in todo if key not in self.pending]
                self.pending.update(fresh)
                return [self.request(self._single(d, i), "probe") for d, i in fresh]
            self.order = sorted(range(len(self.space.dims)), key=self._priority)
            self._start_dimension()
        while self.order and not self.tries:
            self.order.pop(0)
            self._start_dimension()
        goal_met = (self.constraints.memory_ok(self.current_bytes) and self.constraints.energy_ok(self.current_energy)
                    and self.current != self.space.baseline())
        if not self.order or (goal_met and not self.options.keep_compressing):
            self._done = True
            return []
        d = self.order[0]
        config = self.current[:d] + (self.tries[0],) + self.current[d + 1 :]
        self.awaiting = config
        return [self.request(config, "full")]

    def _priority(self, d: int) -> tuple:
        """Largest first. With an energy limit, "largest" is the dimension's share of the
        parameters plus the share of the baseline energy its middle sensitivity probe saves."""
        c = self.constraints
        if c.max_energy_mj is None or not c.baseline_energy_mj:
            return (-self.space.dims[d].size, self._sensitivity(d), d)
        total = sum(dim.size for dim in self.space.dims) or 1
        probe = self.sensitivity[(d, self.levels[d][len(self.levels[d]) // 2])]
        saved = 0.0 if probe.energy_mj is None else (c.baseline_energy_mj - probe.energy_mj) / c.baseline_energy_mj
        return (-(self.space.dims[d].size / total + saved), self._sensitivity(d), d)

    def _sensitivity(self, d: int) -> float:
        middle = self.levels[d][len(self.levels[d]) // 2]
        value = self.signal(self.sensitivity[(d, middle)])
        return float("inf") if value is None else value

    def _start_dimension(self) -> None:
        if not self.order:
            self.tries = []
            return
        d = self.order[0]
        top = len(self.space.dims[d].choices) - 1
        for level in self.levels[d]:  # a sensitivity level that already broke the limit caps the tries
            result = self.sensitivity[(d, level)]
            if result.evaluated and not self.constraints.result_accuracy_ok(result):
                top = level - 1
                break
        self.tries = list(range(top, 0, -1))

    def tell(self, request: Request, result: Result) -> None:
        if request.stage == "probe":
            d = next(i for i, (a, b) in enumerate(zip(request.config, self.space.baseline())) if a != b)
            self.sensitivity[(d, request.config[d])] = result
            self.pending.discard((d, request.config[d]))
            return
        if request.config != self.awaiting:
            return
        self.awaiting = None
        self.tries.pop(0)
        if self.acceptable(result):
            self.current, self.current_bytes = request.config, result.memory_bytes
            self.current_energy = result.energy_mj
            self.tries = []  # this dimension is settled; the next ask moves on
