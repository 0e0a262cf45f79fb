"""Strategy conformance: every registered strategy through the same checks.

A synthetic evaluator stands in for the model (instant, deterministic): memory falls
with each notch, drift grows with it, and accuracy drops smoothly with drift and
collapses past a knee, so strategies face the same kind of landscape as on a real SViT.
"""

from __future__ import annotations

import math

import pytest

from autocompress.proxy import Gate
from autocompress.search import Constraints, SearchLoop, SearchSpace, SpaceDefinition, Unit, create_strategy, strategy_names
from autocompress.spec import (
    BeamStrategy,
    GreedyStrategy,
    NSGA2Strategy,
    PrioritizedStrategy,
    RandomStrategy,
    TPEStrategy,
)

OPTIONS = {
    "greedy": GreedyStrategy(name="greedy", seed=3),
    "beam": BeamStrategy(name="beam", beam_width=3, seed=3),
    "prioritized": PrioritizedStrategy(name="prioritized", seed=3),
    "tpe": TPEStrategy(name="tpe", n_startup_trials=5, seed=3),
    "nsga2": NSGA2Strategy(name="nsga2", population_size=6, seed=3),
    "random": RandomStrategy(name="random", seed=3),
}
BASELINE_BYTES = 1_000_000


def test_every_registered_strategy_is_in_the_suite():
    assert set(strategy_names()) == set(OPTIONS)


def make_space() -> SearchSpace:
    units = [Unit(f"blocks.{b}.mlp", "prune", "mlp", b, 4000 * (b + 1)) for b in range(3)]
    units += [Unit(f"blocks.{b}.fc", "bits", "mlp", b, 8000 * (b + 1)) for b in range(3)]
    definition = SpaceDefinition(prune_rates=(0.0, 0.25, 0.5, 0.75), bits=(32, 16, 8, 4, 2), granularity="layer")
    return SearchSpace(units, definition)


class SyntheticEvaluator:
    def __init__(self):
        self.full_calls: list[str] = []
        self.probe_calls = 0

    @staticmethod
    def _measure(candidate):
        prune, bits = dict(candidate.prune), dict(candidate.bits)
        memory = BASELINE_BYTES
        drift = 0.0
        for b in range(3):
            rate = prune.get(f"blocks.{b}.mlp", 0.0)
            width = bits.get(f"blocks.{b}.fc", 32)
            memory -= int(50_000 * (b + 1) * rate) + int(75_000 * (b + 1) * (1 - width / 32))
            drift += (b + 1) * (rate**2 + (1 - math.log2(width) / 5) ** 2) / 6
        return memory, drift

    def probe(self, candidate):
        self.probe_calls += 1
        return self._measure(candidate)

    def full(self, candidate):
        self.full_calls.append(candidate.id)
        _, drift = self._measure(candidate)
        return 90.0 - (3.0 * drift if drift < 0.5 else 40.0 * drift)


def run(name: str, *, max_full: int = 25, proxy: bool = True, on_result=None):
    space = make_space()
    constraints = Constraints(baseline_accuracy=90.0, baseline_bytes=BASELINE_BYTES, max_drop_points=1.5, min_saving=0.25)
    strategy = create_strategy(OPTIONS[name], space, constraints, proxy=proxy)
    evaluator = SyntheticEvaluator()
    loop = SearchLoop(strategy, evaluator, Gate("auto", 1.5, enabled=proxy), constraints, proxy=proxy,
                      max_full_evaluations=max_full, on_result=on_result)
    loop.run()
    return loop, evaluator


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_deterministic_under_replay(name):
    """Same seed, same results in the same order -> the same requests."""
    first, second = [], []
    run(name, on_result=lambda q, r: first.append((q.stage, q.candidate.id, r.candidate_id)))
    run(name, on_result=lambda q, r: second.append((q.stage, q.candidate.id, r.candidate_id)))
    assert first and first == second


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("proxy", [True, False], ids=["gate-on", "gate-off"])
def test_budget_respected_and_no_duplicate_full_evaluation(name, proxy):
    loop, evaluator = run(name, max_full=12, proxy=proxy)
    assert len(evaluator.full_calls) <= 12
    assert len(evaluator.full_calls) == len(set(evaluator.full_calls)) == loop.stats.full_evaluations


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_terminates_and_finds_a_feasible_point(name):
    loop, _ = run(name, max_full=60)
    assert loop.stats.stopped_by in ("strategy finished", "full-evaluation budget")
    feasible = [r for r in loop.all_results() if r.feasible]
    assert feasible, f"{name} found no feasible point"


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_gated_out_candidates_are_never_fully_evaluated(name):
    loop, evaluator = run(name, max_full=40)
    gated = {r.candidate_id for r in loop.all_results() if r.gate == "fail"}
    assert gated.isdisjoint(evaluator.full_calls)
    assert all(not r.evaluated for r in loop.all_results() if r.gate == "fail")


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_walks_screen_neighbours_with_the_proxy(name):
    """With the proxy, neighbours are ranked by drift and only the chosen moves are
    evaluated in full; without it every neighbour is. (Whether the result is as small
    is a property of the proxy on a real model: experiments/bench/gate.py.)"""
    on, on_eval = run(name, max_full=500)
    off, off_eval = run(name, max_full=500, proxy=False)
    assert on.stats.stopped_by == off.stats.stopped_by == "strategy finished"
    assert any(r.feasible for r in on.all_results()) and any(r.feasible for r in off.all_results())
    assert on_eval.probe_calls > 0 and len(on_eval.full_calls) * 3 <= len(off_eval.full_calls)
