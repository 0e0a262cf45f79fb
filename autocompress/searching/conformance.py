"""The strategy conformance suite: the contract of :mod:`autocompress.searching.base`,
checked on any registered strategy, built-in or a plug-in's (the way Optuna ships its
sampler test cases). Each check raises AssertionError with what broke::

    from autocompress.searching.conformance import CHECKS
    for check in CHECKS:
        check("my_strategy")

(autocompress's own test suite runs every check on every registered strategy.)

A synthetic evaluator stands in for the model (instant, deterministic): memory falls
with each notch, drift grows with it, and accuracy drops smoothly with drift and
collapses past a knee, so strategies face the same kind of landscape as on a real SViT.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Callable

import numpy as np

from autocompress.searching.base import create_strategy, strategy_options
from autocompress.searching.early import EarlyStopping, pack, shard_bounds
from autocompress.searching.execution import LocalExecutor, drive, execute
from autocompress.searching.gate import Gate
from autocompress.searching.loop import SearchLoop
from autocompress.searching.results import Constraints, Result, pareto_set
from autocompress.searching.space import SearchSpace, SpaceDefinition, Unit
from autocompress.searching.stops import StopReason

BASELINE_ACCURACY = 90.0
BASELINE_BYTES = 1_000_000
CONSTRAINTS = Constraints(baseline_accuracy=BASELINE_ACCURACY, baseline_bytes=BASELINE_BYTES, max_drop_points=1.5,
                          min_saving=0.25)
SEED = 3


def make_space() -> SearchSpace:
    """Three blocks, each with a prunable group and a quantizable layer, larger by depth."""
    units = [Unit(f"blocks.{b}.mlp", "prune", "mlp", b, 4000 * (b + 1)) for b in range(3)]
    units += [Unit(f"blocks.{b}.fc", "bits", "mlp", b, 8000 * (b + 1)) for b in range(3)]
    definition = SpaceDefinition(prune_rates=(0.0, 0.25, 0.5, 0.75), bits=(32, 16, 8, 4, 2), granularity="layer")
    return SearchSpace(units, definition)


class SyntheticEvaluator:
    def __init__(self):
        self.full_calls: list[str] = []
        self.probe_calls = 0

    @staticmethod
    def _measure(candidate) -> tuple[int, float]:
        prune, bits = dict(candidate.prune), dict(candidate.bits)
        memory = BASELINE_BYTES
        drift = 0.0
        for b in range(3):
            rate = prune.get(f"blocks.{b}.mlp", 0.0)
            width = bits.get(f"blocks.{b}.fc", 32)
            memory -= int(50_000 * (b + 1) * rate) + int(75_000 * (b + 1) * (1 - width / 32))
            drift += (b + 1) * (rate**2 + (1 - math.log2(width) / 5) ** 2) / 6
        return memory, drift

    def probe(self, candidate) -> tuple[int, float]:
        self.probe_calls += 1
        return self._measure(candidate)

    @classmethod
    def accuracy(cls, candidate) -> float:
        _, drift = cls._measure(candidate)
        return BASELINE_ACCURACY - (3.0 * drift if drift < 0.5 else 40.0 * drift)

    def full(self, candidate) -> float:
        self.full_calls.append(candidate.id)
        return self.accuracy(candidate)

    def baseline(self) -> float:
        return BASELINE_ACCURACY


class PerImageEvaluator(SyntheticEvaluator):
    """The synthetic landscape image by image, for sharded validation and early stopping:
    a baseline right on about ``BASELINE_ACCURACY`` % of ``images`` images (already in a
    random order), and per candidate a seeded set of images it gets wrong that the
    baseline got right (``worse``) and the reverse (``better``, a ``discordance`` / 2
    share), so that its accuracy over the whole set is the synthetic one to within one
    image. ``full(candidate, shard)`` answers as the engine's workers do."""

    def __init__(self, images: int = 20_000, discordance: float = 0.06, seed: int = 0):
        super().__init__()
        self.images, self.discordance = images, discordance
        self.base = np.random.default_rng(seed).random(images) < BASELINE_ACCURACY / 100
        self.base_accuracy = 100.0 * self.base.mean()
        self.images_read = 0

    def correct(self, candidate) -> np.ndarray:
        drop = self.base_accuracy - self.accuracy(candidate)
        rng = np.random.default_rng(int(candidate.id[:12], 16))
        right, wrong = np.flatnonzero(self.base), np.flatnonzero(~self.base)
        better = min(len(wrong), int(self.discordance / 2 * self.images))
        worse = min(len(right), max(0, better + round(drop / 100 * self.images)))
        out = self.base.copy()
        out[rng.choice(right, worse, replace=False)] = False
        out[rng.choice(wrong, better, replace=False)] = True
        return out

    def full(self, candidate, shard: tuple[int, int] | None = None):
        if shard is None or shard[0] == 0:
            self.full_calls.append(candidate.id)
        start, stop = shard or (0, self.images)
        part = self.correct(candidate)[start:stop]
        self.images_read += len(part)
        return SimpleNamespace(accuracy=100.0 * part.mean(), correct=int(part.sum()), total=len(part), per_image=part)

    def baseline(self) -> dict:
        return {"accuracy": self.base_accuracy, "total": self.images, "per_image": pack(self.base)}

    def early_stopping(self, shard_images: int, confidence: float = 0.999, mode: str = "both",
                       decision_confidence: float | None = None) -> EarlyStopping:
        return EarlyStopping(self.base, shard_bounds(self.images, shard_images), CONSTRAINTS.max_drop_points,
                             confidence, mode=mode, decision_confidence=decision_confidence)  # type: ignore[arg-type]


def options(name: str):
    """The options the suite runs strategy ``name`` with: its defaults, seed 3, and its
    ``conformance_settings``."""
    model = strategy_options(name)
    return model(name=name, seed=SEED, **model.conformance_settings)


def make_loop(name: str, *, max_full: int, proxy: bool = True, prior=None, on_result=None,
              on_record=None, constraints: Constraints = CONSTRAINTS, **sharding) -> SearchLoop:
    """``sharding``: the loop's ``shards`` and ``early_stopping``."""
    strategy = create_strategy(options(name), make_space(), constraints, proxy=proxy)
    return SearchLoop(strategy, Gate("auto", constraints.max_drop_points, enabled=proxy), constraints, proxy=proxy,
                      max_full_evaluations=max_full, prior=prior, on_result=on_result, on_record=on_record,
                      **sharding)


def run(name: str, *, max_full: int = 25, proxy: bool = True, prior=None, on_result=None,
        on_record=None) -> tuple[SearchLoop, SyntheticEvaluator]:
    """Search the synthetic space with strategy ``name``, one task at a time."""
    evaluator = SyntheticEvaluator()
    loop = make_loop(name, max_full=max_full, proxy=proxy, prior=prior, on_result=on_result, on_record=on_record)
    drive(loop, LocalExecutor(evaluator))
    return loop, evaluator


# --------------------------------------------------------------------------- the checks


def deterministic_under_replay(name: str) -> None:
    """Same seed, same results in the same order -> the same requests."""
    first, second = [], []
    run(name, on_result=lambda q, r: first.append((q.stage, q.candidate.id, r.candidate_id)))
    run(name, on_result=lambda q, r: second.append((q.stage, q.candidate.id, r.candidate_id)))
    assert first, f"{name} asked for nothing"
    assert first == second, f"{name} asked differently on the same results"


def keeps_the_budget(name: str) -> None:
    """At most the budget of full evaluations, none twice, with the proxy on and off."""
    for proxy in (True, False):
        loop, evaluator = run(name, max_full=12, proxy=proxy)
        calls = evaluator.full_calls
        assert len(calls) <= 12, f"{name} (proxy {proxy}): {len(calls)} full evaluations for a budget of 12"
        assert len(calls) == len(set(calls)) == loop.stats.full_evaluations, \
            f"{name} (proxy {proxy}): a candidate was fully evaluated twice"


def terminates_and_finds_a_feasible_point(name: str) -> None:
    loop, _ = run(name, max_full=60)
    assert loop.stats.stopped_by in (StopReason.STRATEGY_FINISHED, StopReason.FULL_BUDGET), loop.stats.stopped_by
    assert any(r.feasible for r in loop.all_results()), f"{name} found no feasible point"


def never_evaluates_what_the_gate_rejected(name: str) -> None:
    loop, evaluator = run(name, max_full=40)
    gated = {r.candidate_id for r in loop.all_results() if r.gate == "fail"}
    assert gated.isdisjoint(evaluator.full_calls), f"{name}: gated-out candidates were fully evaluated"
    assert all(not r.evaluated for r in loop.all_results() if r.gate == "fail")


def resumes_from_its_journal(name: str) -> None:
    """Results recorded before a stop (the run killed after 8 full evaluations, its
    budget unchanged), replayed as ``prior``, rebuild the strategy: the continued search
    tells the same results in the same order as an uninterrupted one, and evaluates only
    what the first part did not."""
    whole: list = []
    run(name, max_full=20, on_result=lambda q, r: whole.append((q.stage, r.candidate_id, r.gate, r.accuracy)))
    journal: dict[str, Result] = {}  # what the run store keeps: the latest probe/full/failed result

    def keep(kind, _candidate, result, **_origin) -> None:
        if kind != "gate":
            journal[result.candidate_id] = result

    first = SyntheticEvaluator()  # the run stopped (as if killed) once 8 full evaluations are recorded
    holder: dict = {}

    def keep_until_killed(kind, candidate, result, **origin) -> None:
        keep(kind, candidate, result, **origin)
        if kind == "full" and sum(1 for r in journal.values() if r.evaluated) >= 8:
            holder["loop"].stop(StopReason.INTERRUPTED)

    holder["loop"] = make_loop(name, max_full=20, on_record=keep_until_killed)
    drive(holder["loop"], LocalExecutor(first))
    told: list = []
    resumed, second = run(name, max_full=20, prior=journal,
                          on_result=lambda q, r: told.append((q.stage, r.candidate_id, r.gate, r.accuracy)))
    assert told == whole, f"{name}: the resumed search differs from the uninterrupted one"
    assert not set(first.full_calls) & set(second.full_calls), f"{name}: a candidate was fully evaluated twice"
    assert resumed.stats.full_evaluations == len(first.full_calls) + len(second.full_calls)
    assert resumed.stats.replayed >= len(first.full_calls)


def _complete_shuffled(name: str, loop: SearchLoop, evaluator, slots: int) -> list:
    """Run the loop with ``slots`` workers whose tasks complete in a seeded random order;
    the tasks still running when it finished."""
    rng = random.Random(0)
    in_flight: list = []
    for _ in range(100_000):
        in_flight.extend(loop.tasks(slots - len(in_flight)))
        if loop.finished:
            break
        assert in_flight, f"{name}: the loop neither finished nor started work"
        task = in_flight.pop(rng.randrange(len(in_flight)))
        loop.complete(task, execute(evaluator, task.stage, task.candidate, task.shard))
    return in_flight


def completes_in_any_order(name: str) -> None:
    """Tasks completing out of order (several workers): budget kept, no candidate fully
    evaluated twice, every task answered, the search ends."""
    evaluator = SyntheticEvaluator()
    loop = make_loop(name, max_full=15)
    in_flight = _complete_shuffled(name, loop, evaluator, 3)
    assert loop.finished and not in_flight, f"{name}: the search did not end"
    calls = evaluator.full_calls
    assert len(calls) == len(set(calls)) == loop.stats.full_evaluations <= 15


def sharded_in_any_order(name: str) -> None:
    """Full evaluations in shards, completing out of order, early stopping on both sides:
    no candidate evaluated twice, every exact accuracy the whole set's, every candidate
    stopped early on the side of the limit it is on over the whole set, every Pareto point
    exact."""
    evaluator = PerImageEvaluator(images=6_000)
    constraints = Constraints(evaluator.base_accuracy, BASELINE_BYTES, CONSTRAINTS.max_drop_points,
                              CONSTRAINTS.min_saving)
    early = evaluator.early_stopping(500)
    candidates: dict = {}
    loop = make_loop(name, max_full=15, constraints=constraints, shards=early.shards, early_stopping=early,
                     on_record=lambda _kind, candidate, _result, **_origin: candidates.setdefault(candidate.id, candidate))
    _complete_shuffled(name, loop, evaluator, 4)  # shards of a stopped evaluation may still run: ignored
    assert loop.finished, f"{name}: the search did not end"
    calls = evaluator.full_calls
    assert len(calls) == len(set(calls)) == loop.stats.full_evaluations <= 15, f"{name}: {calls}"
    for result in loop.all_results():
        if not result.evaluated:
            continue
        truth = 100.0 * evaluator.correct(candidates[result.candidate_id]).mean()
        if result.early_stopped:
            beyond = not constraints.accuracy_ok(truth)
            assert beyond == (result.stop == "infeasible"), f"{name}: {result.candidate_id} stopped {result.stop}, {truth}"
            assert result.images < evaluator.images and result.drop_low <= result.accuracy_drop <= result.drop_high
        else:
            assert abs(result.accuracy - truth) < 1e-9, f"{name}: {result.candidate_id} {result.accuracy} != {truth}"
    front = pareto_set(loop.all_results(), constraints)
    assert all(p.exact and p.images == evaluator.images for p in front.points), f"{name}: a point is an estimate"


CHECKS: tuple[Callable[[str], None], ...] = (
    deterministic_under_replay,
    keeps_the_budget,
    terminates_and_finds_a_feasible_point,
    never_evaluates_what_the_gate_rejected,
    resumes_from_its_journal,
    completes_in_any_order,
    sharded_in_any_order,
)
