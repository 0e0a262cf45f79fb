"""Sampling strategies: uniform random (the baseline), and Optuna's TPE and NSGA-II.

The Optuna strategies drive a study through ask/tell over one integer parameter per
dimension (the choice index). TPE minimises the footprint subject to the accuracy and
memory constraints; NSGA-II is multi-objective (accuracy up, footprint down) with the
same constraints. An energy or latency limit (``constraints.energy``, ``constraints.latency``)
is one more constraint of both, and one more objective of NSGA-II (the value over its
limit, minimised).

Warm start (``warm_start: N``, with the proxy on): every dimension is first probed alone
at each of its choices, then the allocations that sensitivity suggests
(:mod:`._sensitivity`); the study's first trials are N of those whose footprint meets
the memory limits, spread from the least aggressive to the most; the sampler goes on
from there (the gate, calibrated by then, turns away the collapsed ones).

Every proposal is probed first (footprint and drift); only one whose footprint meets
the memory limits is evaluated in full (``random`` also skips one that a feasible point
already evaluated dominates in footprint and drift: ``skip_dominated``). One that breaks
them is told to the study as infeasible by its exact memory excess, with its accuracy
estimated as below.

A candidate the gate rejects is told to the study as what it is: a constraint
violation estimated, not measured. Its accuracy drop is predicted from its drift by an
increasing fit over the candidates evaluated so far (never below the allowed drop), and
it never enters the Pareto set (only fully evaluated results do).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Iterator, Literal

import numpy as np
from pydantic import Field, PositiveInt

from autocompress.searching.base import Strategy, StrategyOptions, register_strategy
from autocompress.searching.results import Request, Result
from autocompress.searching.space import Config
from autocompress.searching.strategies._moves import predicted_drops
from autocompress.searching.strategies._sensitivity import Sensitivity

_MAX_DRAWS = 1000
_WARM_START = Field(8, ge=0, le=256, description="trials seeded from per-dimension sensitivity probes before the "
                                                  "sampler's own (0: none; needs the proxy)")


class RandomOptions(StrategyOptions):
    """Uniform sampling: the baseline every other strategy is measured against."""

    name: Literal["random"] = Field(description="the strategy (each takes its own options besides seed)")
    skip_dominated: bool = Field(
        True, description="with the proxy on, do not validate a proposal that a feasible point already evaluated "
                          "dominates at the probe (no larger and no more drift): it is predicted to be no better")
    max_skipped: PositiveInt = Field(
        1000, description="stop (strategy finished) after this many proposals in a row came to no full evaluation "
                          "(dominated at the probe, over a memory limit, or turned away by the gate): once the front "
                          "is good, uniform draws almost never improve it, and each costs a probe (on Fashion-MNIST, "
                          "13 dimensions, the gaps between full evaluations reached 400-700 probes)")


class TPEOptions(StrategyOptions):
    """Optuna's TPE sampler over the space."""

    name: Literal["tpe"] = Field(description="the strategy (each takes its own options besides seed)")
    n_startup_trials: PositiveInt = Field(10, description="random trials before TPE models the results")
    warm_start: int = _WARM_START
    conformance_settings = {"n_startup_trials": 5, "warm_start": 3}


class NSGA2Options(StrategyOptions):
    """Optuna's NSGA-II, multi-objective over accuracy and memory."""

    name: Literal["nsga2"] = Field(description="the strategy (each takes its own options besides seed)")
    population_size: Annotated[int, Field(ge=2)] = Field(20, description="NSGA-II's population (trials a generation)")
    warm_start: int = _WARM_START
    conformance_settings = {"population_size": 6, "warm_start": 3}


class _Sampling(Strategy):
    """Proposals are probed first; only those whose footprint meets the memory limits
    (exact at the probe) are asked for in full. Subclasses propose and learn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probing: dict[Config, int] = {}  # proposals waiting for their probe
        self.ready: list[Config] = []  # probed, within the memory limits: full evaluations to ask for

    def _propose(self, config: Config) -> Request:
        self.probing[config] = self.probing.get(config, 0) + 1
        return self.request(config, "probe")

    def _fulls(self, n: int) -> list[Request]:
        taken, self.ready = self.ready[:n], self.ready[n:]
        return [self.request(config, "full") for config in taken]

    def _probed(self, request: Request, result: Result) -> bool | None:
        """A proposal's probe: True to evaluate it in full (asked for next), False when its
        footprint breaks a memory limit (or it failed); None if it was not a proposal."""
        waiting = self.probing.get(request.config, 0)
        if not waiting:
            return None
        if waiting == 1:
            del self.probing[request.config]
        else:
            self.probing[request.config] = waiting - 1
        if result.error is None and result.memory_bytes is not None and self.constraints.memory_ok(result.memory_bytes):
            if not self._worth_validating(result):
                return False
            self.ready.append(request.config)
            return True
        return False

    def _worth_validating(self, result: Result) -> bool:
        """Whether a probed proposal within the memory limits is asked for in full."""
        return True


@register_strategy("random", RandomOptions)
class RandomStrategy(_Sampling):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.seed)
        self.seen: set[Config] = set()
        self.front: list[tuple[int, float]] = []  # (bytes, drift) of the feasible points evaluated
        self.skipped = 0  # proposals in a row that came to no full evaluation
        self._done = False

    @property
    def done(self) -> bool:
        return self._done and not self.ready and not self.probing

    def ask(self, n: int) -> list[Request]:
        requests = self._fulls(n)
        draws = 0
        while len(requests) < n and not self._done:
            config = tuple(int(self.rng.integers(len(dim.choices))) for dim in self.space.dims)
            draws += 1
            if config not in self.seen:
                self.seen.add(config)
                requests.append(self._propose(config))
            if len(self.seen) >= self.space.cardinality() or draws >= _MAX_DRAWS:
                self._done = True
        return requests

    def _worth_validating(self, result: Result) -> bool:
        """Not when a feasible point already evaluated has no more bytes and no more
        drift: by the drift's ranking it is at least as accurate, so the proposal could
        not improve the Pareto set (skipped proposals are probed only)."""
        if not self.options.skip_dominated or result.drift is None:
            return True
        return not any(memory <= result.memory_bytes and drift <= result.drift for memory, drift in self.front)

    def _fruitless(self) -> None:
        """One more proposal in a row that came to no full evaluation. Every way counts:
        counting only the dominated ones let a draw the gate turned away (one in ten on
        Fashion-MNIST) restart the count, and the bound never ended a run there."""
        self.skipped += 1
        if self.skipped >= self.options.max_skipped:
            self._done = True  # the draws still probing finish; nothing new is proposed

    def tell(self, request: Request, result: Result) -> None:
        if request.stage == "probe":
            if self._probed(request, result) is False:  # uniform sampling learns nothing else
                self._fruitless()
            return
        if result.gate == "fail" or result.error is not None:
            self._fruitless()
        else:
            self.skipped = 0
        if result.feasible and result.drift is not None:
            self.front.append((result.memory_bytes, result.drift))


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (a study created, each trial told) held back for the call, and its
    log level put back after: a search changes no process-wide setting of the caller's."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


class _OptunaStrategy(_Sampling):
    directions: list[str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import optuna
        from optuna.distributions import IntDistribution

        self.distributions = {dim.name: IntDistribution(0, len(dim.choices) - 1) for dim in self.space.dims}
        # each quantity the constraints limit besides memory (energy, latency) is one more objective of a
        # multi-objective study, and a constraint of every study
        self.extra = [o for o in self.constraints.objectives() if o != "memory_bytes"]
        directions = list(self.directions) + (["minimize"] * len(self.extra) if len(self.directions) > 1 else [])
        with quiet_optuna():
            self.study = optuna.create_study(directions=directions, sampler=self._sampler())
        self.pending: dict[Config, list] = {}  # trials asked, by configuration, oldest first
        self.distinct: set[Config] = set()
        self.repeats = 0
        self.observed: list[tuple[float, float]] = []  # (signal, drop as decided) of evaluated candidates
        warm = self.options.warm_start if self.proxy else 0
        self.sensitivity = Sensitivity(self.space, self.constraints.baseline_bytes, self.signal) if warm else None
        self.seeded = not warm

    @property
    def done(self) -> bool:
        return (len(self.distinct) >= self.space.cardinality() or self.repeats >= 50) and not self.ready

    def _warm_start(self, n: int) -> list[Request] | None:
        """The sensitivity probes still to ask ([] while waiting for them); None once the
        study is seeded."""
        if self.seeded:
            return None
        if not self.sensitivity.complete:
            return self.sensitivity.requests(self.request, n)
        for config in self.sensitivity.seeds(self.options.warm_start, self.constraints.memory_ok):
            self.study.enqueue_trial({dim.name: index for dim, index in zip(self.space.dims, config)})
        self.seeded = True
        return None

    def ask(self, n: int) -> list[Request]:
        probes = self._warm_start(n)
        if probes is not None:
            return probes
        requests = self._fulls(n)
        while len(requests) < n and not self.done:
            trial = self.study.ask(self.distributions)
            config = tuple(trial.params[dim.name] for dim in self.space.dims)
            self.repeats = self.repeats + 1 if config in self.distinct else 0
            self.distinct.add(config)
            self.pending.setdefault(config, []).append(trial)
            requests.append(self._propose(config))
        return requests

    def _estimated_drop(self, signal: float | None, floor: float) -> float:
        """An accuracy drop not measured, predicted from the signal by an increasing fit
        over the evaluated candidates; at least ``floor``."""
        predicted = predicted_drops(self.observed, [signal]) if signal is not None else None
        if predicted is None:
            return max(floor, self.constraints.max_drop_points * 4)
        return max(floor, predicted[0])

    def tell(self, request: Request, result: Result) -> None:
        from optuna.trial import TrialState

        if request.stage == "probe":
            if self.sensitivity is not None:
                self.sensitivity.tell(request.config, result)
            if self._probed(request, result) is not False:
                return  # not a proposal, or asked for in full next
        elif result.evaluated and result.accuracy_drop is not None:
            # the fit predicts what feasibility is decided on: the drop's upper bound where there is one
            self.observed.append((self.signal(result), self.constraints.decision_drop(result)))
        trials = self.pending.get(request.config)
        if not trials:
            return
        trial = trials.pop(0)
        if result.error is not None or result.memory_bytes is None:
            with quiet_optuna():
                self.study.tell(trial, state=TrialState.FAIL)
            return
        fraction = result.memory_bytes / self.constraints.baseline_bytes
        if result.evaluated:  # judged as the search judges it: the drop's upper bound where there is one
            accuracy, drop = result.accuracy, self.constraints.decision_drop(result)
        elif request.stage == "probe":  # beyond a memory limit: no full evaluation, accuracy estimated
            drop = self._estimated_drop(self.signal(result), floor=0.0)
        else:  # gated out: infeasible by the gate's word, its accuracy estimated from its drift
            drop = self._estimated_drop(self.signal(result), floor=self.constraints.max_drop_points * 1.01 + 1e-6)
        if not result.evaluated:
            accuracy = self.constraints.baseline_accuracy - drop
        trial.set_constraint("accuracy", self.constraints.accuracy_excess(drop))  # feasible when <= 0
        trial.set_constraint("memory", self.constraints.memory_excess(result.memory_bytes))
        extra = []
        for name in self.extra:
            value = getattr(result, name)
            limit = self.constraints.max_energy_mj if name == "energy_mj" else self.constraints.max_latency_ms
            ratio = float("inf") if value is None else value / limit  # of the limit: feasible when <= 1
            trial.set_constraint(name, ratio - 1 if value is not None else 1.0)
            extra.append(ratio if value is not None else 10.0)
        values = self._values(accuracy, fraction)
        with quiet_optuna():
            self.study.tell(trial, (*values, *extra) if isinstance(values, tuple) else values)


@register_strategy("tpe", TPEOptions)
class TPEStrategy(_OptunaStrategy):
    directions = ["minimize"]

    def _sampler(self):
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.options.n_startup_trials)

    def _values(self, accuracy: float, fraction: float):
        return fraction


@register_strategy("nsga2", NSGA2Options)
class NSGA2Strategy(_OptunaStrategy):
    directions = ["maximize", "minimize"]

    def _sampler(self):
        import optuna

        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=self.options.population_size)

    def _values(self, accuracy: float, fraction: float):
        return accuracy, fraction
