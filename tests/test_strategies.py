"""Strategy conformance: the package's suite (autocompress.search.conformance) on every
registered strategy, and on a plug-in strategy registered here the way a third party would."""

from __future__ import annotations

from typing import Literal

import pytest

from autocompress.search import Strategy, StrategyOptions, register_strategy, strategy_names
from autocompress.search.conformance import CHECKS, run


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", strategy_names())
def test_every_registered_strategy_passes_the_conformance_suite(name, check):
    check(name)


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


class _CornerOptions(StrategyOptions):
    name: Literal["test_corners"]


class _Corners(Strategy):
    """A plug-in: asks each dimension's most aggressive choice alone, then stops."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = [tuple(len(d.choices) - 1 if i == j else 0 for j, d in enumerate(self.space.dims))
                        for i in range(len(self.space.dims))]
        self.pending.append(tuple(1 for _ in self.space.dims))  # one notch everywhere

    @property
    def done(self) -> bool:
        return not self.pending

    def ask(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        return [self.request(config) for config in out]

    def tell(self, request, result):
        pass


def test_a_plugin_strategy_registers_with_its_options_and_runs_the_suite():
    if "test_corners" not in strategy_names():
        register_strategy("test_corners", _CornerOptions)(_Corners)
    assert "test_corners" in strategy_names()
    for check in CHECKS:
        check("test_corners")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("test_corners", _CornerOptions)(_Corners)
    with pytest.raises(ValueError, match="must declare name"):
        register_strategy("other_name", _CornerOptions)


def test_prioritized_compresses_when_the_baseline_already_meets_the_goal_and_can_keep_going():
    from autocompress.search import Constraints, Gate, LocalExecutor, SearchLoop, create_strategy, drive, strategy_options
    from autocompress.search.conformance import BASELINE_ACCURACY, BASELINE_BYTES, SyntheticEvaluator, make_space

    def best(min_saving: float, keep: bool):
        constraints = Constraints(BASELINE_ACCURACY, BASELINE_BYTES, 1.5, min_saving)
        options = strategy_options("prioritized")(name="prioritized", seed=0, keep_compressing=keep)
        loop = SearchLoop(create_strategy(options, make_space(), constraints), Gate("auto", 1.5), constraints,
                          max_full_evaluations=60)
        drive(loop, LocalExecutor(SyntheticEvaluator()))
        feasible = [r.memory_bytes for r in loop.all_results() if r.feasible]
        return min(feasible) if feasible else None, loop.stats.full_evaluations

    at_zero, _ = best(0.0, False)  # the uncompressed model meets a 0 % goal: it still compresses
    assert at_zero is not None and at_zero < BASELINE_BYTES
    stop, stop_fulls = best(0.1, False)
    keep, keep_fulls = best(0.1, True)
    assert keep < stop and keep_fulls > stop_fulls  # it went on past the goal, to a smaller point


def test_beam_evaluates_fewer_moves_a_step_when_the_budget_is_tight():
    from autocompress.search import Result, create_strategy, strategy_options
    from autocompress.search.conformance import CONSTRAINTS, SyntheticEvaluator, make_space

    def first_step(full_left: int | None) -> int:
        beam = create_strategy(strategy_options("beam")(name="beam", seed=0, beam_width=4), make_space(), CONSTRAINTS)
        evaluator = SyntheticEvaluator()
        beam.full_left = full_left
        requests = beam.ask(100)
        while requests and requests[0].stage == "probe":
            for request in requests:
                memory, drift = evaluator.probe(request.candidate)
                beam.tell(request, Result(request.candidate.id, memory_bytes=memory, drift=drift))
            requests = beam.ask(100)
        return len(requests)

    assert first_step(None) == 4 and first_step(200) == 4  # unknown or ample budget: the whole beam
    assert first_step(1) == 1  # one evaluation left: the best move only
