"""Sampling strategies: uniform random (the baseline), and Optuna's TPE and NSGA-II.

The Optuna strategies drive a study through ask/tell over one integer parameter per
dimension (the choice index). TPE minimises the footprint subject to the accuracy and
memory constraints; NSGA-II is multi-objective (accuracy up, footprint down) with the
same constraints. A candidate the gate rejects is told to the study as infeasible (its
constraint value is how far its drift exceeds the threshold) without a full
evaluation, and never enters the Pareto set (only fully evaluated results do).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, PositiveInt

from autocompress.search.base import Strategy, StrategyOptions, register_strategy
from autocompress.search.results import Request, Result
from autocompress.search.space import Config

_MAX_DRAWS = 1000


class RandomOptions(StrategyOptions):
    """Uniform sampling: the baseline every other strategy is measured against."""

    name: Literal["random"]


class TPEOptions(StrategyOptions):
    """Optuna's TPE sampler over the space."""

    name: Literal["tpe"]
    n_startup_trials: PositiveInt = 10
    conformance_settings = {"n_startup_trials": 5}


class NSGA2Options(StrategyOptions):
    """Optuna's NSGA-II, multi-objective over accuracy and memory."""

    name: Literal["nsga2"]
    population_size: Annotated[int, Field(ge=2)] = 20
    conformance_settings = {"population_size": 6}


@register_strategy("random", RandomOptions)
class RandomStrategy(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.seed)
        self.seen: set[Config] = set()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def ask(self, n: int) -> list[Request]:
        requests = []
        draws = 0
        while len(requests) < n and not self._done:
            config = tuple(int(self.rng.integers(len(dim.choices))) for dim in self.space.dims)
            draws += 1
            if config not in self.seen:
                self.seen.add(config)
                requests.append(self.request(config, "full"))
            if len(self.seen) >= self.space.cardinality() or draws >= _MAX_DRAWS:
                self._done = True
        return requests

    def tell(self, request: Request, result: Result) -> None:
        pass  # uniform sampling learns nothing


class _OptunaStrategy(Strategy):
    directions: list[str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import optuna
        from optuna.distributions import IntDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.distributions = {dim.name: IntDistribution(0, len(dim.choices) - 1) for dim in self.space.dims}
        self.study = optuna.create_study(directions=self.directions, sampler=self._sampler())
        self.pending: dict[Config, list] = {}
        self.distinct: set[Config] = set()
        self.repeats = 0

    @property
    def done(self) -> bool:
        return len(self.distinct) >= self.space.cardinality() or self.repeats >= 50

    def ask(self, n: int) -> list[Request]:
        requests = []
        for _ in range(n):
            if self.done:
                break
            trial = self.study.ask(self.distributions)
            config = tuple(trial.params[dim.name] for dim in self.space.dims)
            self.repeats = self.repeats + 1 if config in self.distinct else 0
            self.distinct.add(config)
            self.pending.setdefault(config, []).append(trial)
            requests.append(self.request(config, "full"))
        return requests

    def tell(self, request: Request, result: Result) -> None:
        from optuna.trial import TrialState

        trials = self.pending.get(request.config)
        if not trials:
            return
        trial = trials.pop(0)
        if result.error is not None or result.memory_bytes is None:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        fraction = result.memory_bytes / self.constraints.baseline_bytes
        if result.evaluated:
            accuracy = result.accuracy
            accuracy_excess = self.constraints.accuracy_excess(result.accuracy_drop)
        else:  # gated out: infeasible by the gate's word, no accuracy measured
            accuracy = 0.0
            accuracy_excess = 1.0
        trial.set_constraint("accuracy", accuracy_excess)  # feasible when <= 0
        trial.set_constraint("memory", self.constraints.memory_excess(result.memory_bytes))
        self.study.tell(trial, self._values(accuracy, fraction))


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
