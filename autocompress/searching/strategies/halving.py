"""Multi-fidelity screening: many candidates at the cheap fidelity (footprint and drift,
one probe each), few at the expensive one (a full validation), in rounds.

1. The first round's pool is the sensitivity walk (:mod:`._sensitivity`): every
   dimension probed alone at each choice, then the allocations that trade bytes saved
   for drift added, from the least aggressive to the most. Later rounds' pools are
   ``pool_size`` mutations (a notch up or down in a few dimensions) of the smallest
   feasible points found so far.
2. The whole pool is probed. What breaks a memory limit, or cannot be smaller than the
   best feasible point already found, is dropped: the strategy looks for the smallest
   feasible footprint.
3. Of the rest, one in ``eta`` is validated in full, one at a time, each time the one
   an increasing fit of accuracy drop on drift (over the candidates validated so far)
   predicts within the accuracy limit with the smallest footprint; before the fit has
   two points, or when it predicts none within the limit, the least drifted one. The fit
   learns from every validation (and from a pick the gate turned away, as a drop of four
   times the limit), so the next pick is made on what the last one showed.
4. The search ends when ``stale_rounds`` rounds in a row validate nothing.

Without the proxy there is no cheap fidelity: probes are full validations, and the
strategy still works, at a full evaluation per probe.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from autocompress.searching.base import Strategy, StrategyOptions, register_strategy
from autocompress.searching.results import Request, Result
from autocompress.searching.space import Config
from autocompress.searching.strategies._moves import predicted_drops
from autocompress.searching.strategies._sensitivity import Sensitivity

_MAX_DRAWS = 2000


class HalvingOptions(StrategyOptions):
    """Screen pools of candidates by their probe, validate the most promising in full."""

    name: Literal["halving"] = Field(description="the strategy (each takes its own options besides seed)")
    pool_size: Annotated[int, Field(ge=2, le=4096, description="candidates probed per round after the first")] = 24
    eta: Annotated[int, Field(ge=1, le=64, description="one candidate in eta of a round is validated in full")] = 3
    parents: Annotated[int, Field(ge=1, le=64, description="smallest feasible points mutated into a new pool")] = 4
    stale_rounds: Annotated[int, Field(ge=1, le=100, description="rounds in a row without a full validation "
                                                                  "after which the search ends")] = 3
    conformance_settings = {"pool_size": 12}


@register_strategy("halving", HalvingOptions)
class HalvingStrategy(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.seed)
        self.sensitivity = Sensitivity(self.space, self.constraints.baseline_bytes, self.signal)
        self.pool: list[Config] | None = None  # this round's candidates (None: the sensitivity round)
        self.asked: set[Config] = set()  # probes asked, every round
        self.probed: dict[Config, Result] = {}
        self.validated: dict[Config, Result] = {}
        self.quota = 0  # full validations left in this round
        self.round_fulls = 0  # full validations of this round
        self.stale = 0  # rounds in a row without one
        self.awaiting: Config | None = None
        self.observed: list[tuple[float, float]] = []  # (signal, drop as decided) of exact validations
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    # ------------------------------------------------------------------ asking

    def ask(self, n: int) -> list[Request]:
        if self._done or self.awaiting is not None:
            return []
        if self.pool is None:  # the first round: the sensitivity walk
            if not self.sensitivity.complete:
                return self.sensitivity.requests(self.request, n)
            self._start_round(list(self.sensitivity.walk))
        while True:
            missing = [c for c in self.pool if c not in self.probed]
            if missing:
                fresh = [c for c in missing if c not in self.asked][:n]
                self.asked.update(fresh)
                return [self.request(c, "probe") for c in fresh]  # [] while waiting for them
            pick = self._pick() if self.quota > 0 else None
            if pick is not None:
                self.quota -= 1
                self.awaiting = pick
                return [self.request(pick, "full")]
            self.stale = 0 if self.round_fulls else self.stale + 1
            pool = self._mutations() if self.stale < self.options.stale_rounds else []
            if not pool:
                self._done = True
                return []
            self._start_round(pool)

    def _start_round(self, pool: list[Config]) -> None:
        self.pool = pool
        self.round_fulls = 0
        self.quota = max(1, -(-len(pool) // self.options.eta))

    def _best_feasible(self) -> list[tuple[int, Config]]:
        return sorted((r.memory_bytes, c) for c, r in self.validated.items()
                      if r.feasible and r.exact and r.memory_bytes is not None)

    def _candidates(self) -> list[Config]:
        """Probed, within the memory limits, smaller than the best feasible point, not validated."""
        best = self._best_feasible()
        limit = best[0][0] if best else None
        out = []
        for config in self.pool:
            result = self.probed[config]
            if (config in self.validated or result.error is not None or result.memory_bytes is None
                    or self.signal(result) is None or not self.constraints.memory_ok(result.memory_bytes)):
                continue
            if limit is not None and result.memory_bytes >= limit:
                continue
            out.append(config)
        return out

    def _pick(self) -> Config | None:
        candidates = self._candidates()
        if not candidates:
            return None
        signals = [self.signal(self.probed[c]) for c in candidates]
        predicted = predicted_drops(self.observed, signals)
        if predicted is not None:
            within = [(self.probed[c].memory_bytes, s, c) for c, s, p in zip(candidates, signals, predicted)
                      if p <= self.constraints.max_drop_points]
            if within:
                return min(within)[2]
        return min(zip(signals, candidates))[1]

    def _mutations(self) -> list[Config]:
        """Up to ``pool_size`` new configurations a notch or two away from the smallest
        feasible points (from the baseline before any is found)."""
        parents = [c for _, c in self._best_feasible()[: self.options.parents]] or [self.space.baseline()]
        dims = len(self.space.dims)
        pool: list[Config] = []
        draws = 0
        while len(pool) < self.options.pool_size and draws < _MAX_DRAWS:
            draws += 1
            parent = parents[int(self.rng.integers(len(parents)))]
            child = list(parent)
            moved = self.rng.random(dims) < min(1.0, 2.0 / dims)
            if not moved.any():
                moved[int(self.rng.integers(dims))] = True
            for d in np.flatnonzero(moved):
                step = 1 if self.rng.random() < 0.6 else -1
                child[d] = int(min(max(child[d] + step, 0), len(self.space.dims[d].choices) - 1))
            child = tuple(child)
            if child not in self.asked and child not in self.probed and child not in pool and any(child):
                pool.append(child)
        return pool

    # ------------------------------------------------------------------ telling

    def tell(self, request: Request, result: Result) -> None:
        if request.stage == "probe":
            self.sensitivity.tell(request.config, result)
            self.probed.setdefault(request.config, result)
            return
        self.probed.setdefault(request.config, result)
        if result.evaluated:
            self.validated[request.config] = result
            self.round_fulls += request.config == self.awaiting
            if result.exact and self.signal(result) is not None:
                # what feasibility is decided on: the drop's upper bound where there is one
                self.observed.append((self.signal(result), self.constraints.decision_drop(result)))
        elif request.config == self.awaiting:
            self.validated[request.config] = result  # gated out: not asked for again
            if result.error is None and self.signal(result) is not None:
                # the gate judged it clearly infeasible: the fit learns that much
                self.observed.append((self.signal(result), 4 * self.constraints.max_drop_points))
        if request.config == self.awaiting:
            self.awaiting = None
