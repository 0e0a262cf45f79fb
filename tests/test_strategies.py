"""Strategy conformance: the package's suite (autocompress.searching.conformance) on every
registered strategy, and on a plug-in strategy registered here the way a third party would."""

from __future__ import annotations

from typing import Literal

import pytest

from autocompress.searching import (
    Result,
    Strategy,
    StrategyOptions,
    create_strategy,
    register_strategy,
    strategy_names,
    strategy_options,
)
from autocompress.searching.conformance import CHECKS, run


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
    from autocompress.searching import Constraints, Gate, LocalExecutor, SearchLoop, drive
    from autocompress.searching.conformance import BASELINE_ACCURACY, BASELINE_BYTES, SyntheticEvaluator, make_space

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
    from autocompress.searching.conformance import CONSTRAINTS, SyntheticEvaluator, make_space

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


def _run_synthetic(options, constraints=None, budget: int = 30, threshold: float | str = "auto"):
    from autocompress.searching import Gate, LocalExecutor, SearchLoop, drive
    from autocompress.searching.conformance import CONSTRAINTS, SyntheticEvaluator, make_space

    constraints = constraints or CONSTRAINTS
    strategy = create_strategy(options, make_space(), constraints)
    loop = SearchLoop(strategy, Gate(threshold, constraints.max_drop_points), constraints, max_full_evaluations=budget)
    drive(loop, LocalExecutor(SyntheticEvaluator()))
    return loop, strategy


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2"])
def test_sampling_strategies_evaluate_in_full_only_candidates_within_the_memory_limits(name):
    from autocompress.searching import Constraints
    from autocompress.searching.conformance import BASELINE_ACCURACY, BASELINE_BYTES

    constraints = Constraints(BASELINE_ACCURACY, BASELINE_BYTES, 1.5, min_saving=0.4)
    loop, _ = _run_synthetic(strategy_options(name)(name=name, seed=1), constraints)
    results = loop.all_results()
    fulls = [r for r in results if r.evaluated]
    assert fulls and all(constraints.memory_ok(r.memory_bytes) for r in fulls)
    # proposals beyond the limit were made, probed, and not evaluated (the check is not vacuous)
    assert any(not constraints.memory_ok(r.memory_bytes) for r in results if r.memory_bytes is not None)


@pytest.mark.parametrize("name", ["tpe", "nsga2"])
def test_optuna_strategies_start_from_the_sensitivity_allocations(name):
    options = strategy_options(name)(name=name, seed=0, warm_start=3)
    loop, strategy = _run_synthetic(options)
    seeds = strategy.sensitivity.seeds(3, loop.constraints.memory_ok)
    assert len(seeds) == 3 and seeds[0] != seeds[-1]
    first_trials = [tuple(t.params[d.name] for d in strategy.space.dims) for t in strategy.study.trials[:3]]
    assert first_trials == seeds
    # every dimension was probed alone at every choice before the first trial
    singles = set(strategy.sensitivity.configs.values())
    assert singles <= set(strategy.sensitivity.measured) | {c for c in singles if c in strategy.sensitivity.asked}
    assert len(strategy.sensitivity.results) == len(strategy.sensitivity.keys)
    without = strategy_options(name)(name=name, seed=0, warm_start=0)
    _, plain = _run_synthetic(without)
    assert plain.sensitivity is None


@pytest.mark.parametrize("margin", [None, 0.5])
def test_a_gated_candidate_is_told_to_optuna_as_an_estimated_violation_not_accuracy_zero(margin):
    """The estimate is fitted to the drop as the search decides it: the measured drop, or,
    where the run decides with confidence (``margin``: each bound that far above its
    measured drop), the upper bound, so it is compared with the limit on one scale."""
    from autocompress.searching.conformance import CONSTRAINTS, make_space

    options = strategy_options("nsga2")(name="nsga2", seed=0, population_size=4, warm_start=0)
    strategy = create_strategy(options, make_space(), CONSTRAINTS)
    requests = strategy.ask(4)
    for request, (drift, drop) in zip(requests, [(0.1, 0.2), (0.3, 1.0), (0.6, 3.0), (0.9, 20.0)]):
        probe = Result(request.candidate.id, memory_bytes=500_000, drift=drift)
        strategy.tell(request, probe)  # within the memory limit: asked for in full next
        full = strategy.ask(1)[0]
        assert full.stage == "full" and full.config == request.config
        if drift < 0.9:
            strategy.tell(full, Result(request.candidate.id, memory_bytes=500_000, drift=drift, gate="pass",
                                       accuracy=CONSTRAINTS.baseline_accuracy - drop, accuracy_drop=drop,
                                       drop_upper=None if margin is None else drop + margin))
        else:
            strategy.tell(full, Result(request.candidate.id, memory_bytes=500_000, drift=drift, gate="fail"))
    gated = strategy.study.trials[3]
    accuracy, _ = gated.values
    estimate = 3.0 + (margin or 0.0)  # the fit at the largest drift seen
    assert CONSTRAINTS.baseline_accuracy - accuracy == pytest.approx(estimate)
    assert gated.constraints == {"accuracy": pytest.approx(estimate - 1.5), "memory": 0.0}  # violated by it


def test_beam_does_not_try_moves_at_least_as_aggressive_as_a_broken_configuration():
    options = strategy_options("beam")(name="beam", seed=0, beam_width=2)
    loop, strategy = _run_synthetic(options, budget=60)
    assert strategy.broken
    tried = [r for r in loop.all_results() if r.evaluated]
    broken_ids = {strategy.space.candidate(c).id for c in strategy.broken}
    for config in strategy.broken:
        later = [c for c in strategy.visited if c != config and all(a >= b for a, b in zip(c, config))]
        assert not later, f"{later} is at least as aggressive as the broken {config}"
    assert broken_ids <= {r.candidate_id for r in tried}


@pytest.mark.parametrize("name", ["greedy", "beam"])
def test_walks_take_a_negligible_move_only_after_every_larger_one(name):
    """A move that saves a sliver of the bytes still to save (a classification head walked notch by
    notch) costs a full evaluation like any other: it waits, however little drift it adds."""
    from autocompress.searching.conformance import BASELINE_BYTES, CONSTRAINTS, make_space

    def first_full(share: float):
        options = strategy_options(name)(name=name, seed=0, min_step_share=share,
                                         **({"beam_width": 1} if name == "beam" else {}))
        walk = create_strategy(options, make_space(), CONSTRAINTS)
        requests = walk.ask(100)
        probed = [r for r in requests if r.stage == "probe"]
        assert len(probed) >= 2
        tiny, large = probed[0], probed[1]
        for request in probed:
            if request is tiny:  # no drift at all, 0.1 % of the model saved
                result = Result(request.candidate.id, memory_bytes=BASELINE_BYTES - BASELINE_BYTES // 1000, drift=0.0)
            elif request is large:  # half the model, some drift
                result = Result(request.candidate.id, memory_bytes=BASELINE_BYTES // 2, drift=0.05)
            else:  # the others: small savings, much drift
                result = Result(request.candidate.id, memory_bytes=BASELINE_BYTES - BASELINE_BYTES // 50, drift=0.9)
            walk.tell(request, result)
        fulls = walk.ask(100)
        return fulls[0].config, tiny.config, large.config

    chosen, tiny, large = first_full(0.02)
    assert chosen == large
    chosen, tiny, large = first_full(0.0)  # by score alone the free move goes first
    assert chosen == tiny


def _greedy_after_one_step(free_share: float):
    """A greedy walk one accepted step from the baseline (its configuration drifts 0.2),
    with the probes of the next step asked for."""
    from autocompress.searching.conformance import BASELINE_BYTES, CONSTRAINTS, make_space

    walk = create_strategy(strategy_options("greedy")(name="greedy", seed=0, free_share=free_share),
                           make_space(), CONSTRAINTS)
    probes = walk.ask(100)
    for i, request in enumerate(probes):  # the first move saves most; the walk takes it
        walk.tell(request, Result(request.candidate.id, memory_bytes=BASELINE_BYTES // 2 if i == 0 else
                                  BASELINE_BYTES - BASELINE_BYTES // 20, drift=0.2))
    (full,) = walk.ask(100)
    accuracy = CONSTRAINTS.baseline_accuracy - 0.1
    walk.tell(full, Result(full.candidate.id, memory_bytes=BASELINE_BYTES // 2, drift=0.2, gate="pass",
                           accuracy=accuracy, accuracy_drop=0.1))
    assert walk.current == full.config
    return walk, walk.ask(100)


def _answer_probes(walk, probes, free: int):
    """The first ``free`` probes add 0.0005 to the drift (free), the others 0.1."""
    from autocompress.searching.conformance import BASELINE_BYTES

    for i, request in enumerate(probes):
        drift = 0.2005 if i < free else 0.3
        walk.tell(request, Result(request.candidate.id, memory_bytes=BASELINE_BYTES // 2 - 1000 * (i + 1), drift=drift))
    return [p.config for p in probes[:free]]


def test_greedy_takes_the_free_moves_of_a_step_in_one_full_evaluation():
    from autocompress.searching.conformance import CONSTRAINTS

    walk, probes = _greedy_after_one_step(0.01)
    assert len(probes) >= 3 and {p.stage for p in probes} == {"probe"}
    parent = walk.current
    free = _answer_probes(walk, probes, free=2)
    (together_probe,) = walk.ask(100)  # the two free moves at once, probed first
    expected = tuple(max(a, b) for a, b in zip(*free))
    assert together_probe.stage == "probe" and together_probe.config == expected
    assert sum(a != b for a, b in zip(expected, parent)) == 2
    walk.tell(together_probe, Result(together_probe.candidate.id, memory_bytes=1000, drift=0.201))
    (full,) = walk.ask(100)
    assert full.stage == "full" and full.config == expected
    walk.tell(full, Result(full.candidate.id, memory_bytes=1000, drift=0.201, gate="pass",
                           accuracy=CONSTRAINTS.baseline_accuracy - 0.2, accuracy_drop=0.2))
    assert walk.current == expected  # two notches for one full evaluation


def test_greedy_takes_free_moves_one_at_a_time_when_together_they_break_the_limit():
    from autocompress.searching.conformance import CONSTRAINTS

    walk, probes = _greedy_after_one_step(0.01)
    free = _answer_probes(walk, probes, free=2)
    (together_probe,) = walk.ask(100)
    walk.tell(together_probe, Result(together_probe.candidate.id, memory_bytes=1000, drift=0.201))
    (full,) = walk.ask(100)
    walk.tell(full, Result(full.candidate.id, memory_bytes=1000, drift=0.201, gate="pass",
                           accuracy=CONSTRAINTS.baseline_accuracy - 5.0, accuracy_drop=5.0))
    assert walk.broken_together == [together_probe.config]
    (single,) = walk.ask(100)  # back to the ranked moves, one at a time
    assert single.stage == "full" and single.config in free


@pytest.mark.parametrize("case", ["one free move", "free_share 0", "together drifts"])
def test_greedy_takes_moves_one_at_a_time_unless_two_are_free_together(case):
    walk, probes = _greedy_after_one_step(0.0 if case == "free_share 0" else 0.01)
    free = _answer_probes(walk, probes, free=1 if case == "one free move" else 2)
    requests = walk.ask(100)
    if case == "together drifts":  # the two at once add far more than each alone: not free
        (together_probe,) = requests
        walk.tell(together_probe, Result(together_probe.candidate.id, memory_bytes=1000, drift=0.5))
        requests = walk.ask(100)
    (single,) = requests
    assert single.stage == "full" and single.config in free


def _walk_two_dimensions(max_failed_trades: int):
    """Greedy on two pruned units: B (30,000 bytes a notch, cheap in accuracy) and A
    (100,000 a notch, 0.5 / 1.3 / 5 points). The walk takes B to its end, A one notch;
    A's second notch breaks the limit (1.6 points). Trading one notch of B back for it
    fits (1.45 points) and saves 70,000 bytes more. Returns the walk and its full
    evaluations in order."""
    from autocompress.searching.conformance import BASELINE_ACCURACY, BASELINE_BYTES, CONSTRAINTS
    from autocompress.searching.space import SearchSpace, SpaceDefinition, Unit

    units = [Unit("a", "prune", "mlp", 0, 1), Unit("b", "prune", "mlp", 1, 1)]
    space = SearchSpace(units, SpaceDefinition(prune_rates=(0.0, 0.25, 0.5, 0.75), granularity="layer"))
    damage = {"a": (0.0, 0.5, 1.3, 5.0), "b": (0.0, 0.1, 0.15, 0.3)}
    saving = {"a": 100_000, "b": 30_000}
    walk = create_strategy(strategy_options("greedy")(name="greedy", seed=0, max_failed_trades=max_failed_trades),
                           space, CONSTRAINTS)
    fulls = []
    for _ in range(200):
        requests = walk.ask(100)
        if not requests:
            break
        for request in requests:
            notches = dict(zip(("a", "b"), request.config))
            drop = sum(damage[u][n] for u, n in notches.items())
            memory = BASELINE_BYTES - sum(saving[u] * n for u, n in notches.items())
            if request.stage == "probe":
                walk.tell(request, Result(request.candidate.id, memory_bytes=memory, drift=drop))
            else:
                fulls.append(request.config)
                walk.tell(request, Result(request.candidate.id, memory_bytes=memory, drift=drop, gate="pass",
                                          accuracy=BASELINE_ACCURACY - drop, accuracy_drop=drop))
    assert walk.done
    return walk, fulls


def test_greedy_trades_a_notch_back_for_a_frozen_move_once_no_move_is_left():
    walk, fulls = _walk_two_dimensions(max_failed_trades=3)
    assert (2, 3) in fulls and (2, 2) in fulls  # A's second notch broke the limit; traded for one notch of B
    assert walk.current == (2, 2)  # 260,000 bytes saved, against 190,000 where the plain walk ends
    assert len(fulls) == len(set(fulls))  # nothing evaluated twice (B's notch back is known to break)
    assert fulls.index((2, 3)) < fulls.index((2, 2)) and (3, 1) in fulls  # the next trade tried, and broke


def test_greedy_ends_where_no_move_is_left_without_trades():
    walk, fulls = _walk_two_dimensions(max_failed_trades=0)
    assert walk.current == (1, 3) and (2, 2) not in fulls


def test_random_stops_once_its_draws_keep_being_dominated():
    """With a good front, uniform draws are nearly all dominated at the probe: random ends
    ("strategy finished") after max_skipped of them in a row instead of probing without end
    (on Fashion-MNIST it probed 3,600 candidates in 71 minutes without a 25th full evaluation)."""
    options = strategy_options("random")
    loop, strategy = _run_synthetic(options(name="random", seed=0, max_skipped=5), budget=10_000)
    assert loop.stats.stopped_by == "strategy finished"
    assert strategy.skipped >= 5 and strategy.front
    fulls = sum(r.evaluated for r in loop.all_results())
    assert 0 < fulls < 10_000
    # with a larger limit the same draws run longer: the limit is what ended it
    longer, _ = _run_synthetic(options(name="random", seed=0, max_skipped=50), budget=10_000)
    assert len(longer.all_results()) > len(loop.all_results())


def test_random_counts_draws_the_gate_turns_away_toward_its_stop():
    """A draw the gate turns away comes to no full evaluation either; when it restarted the
    count, random on Fashion-MNIST (one draw in ten turned away) never reached the bound."""
    from autocompress.searching.conformance import make_space

    # a gate that turns every candidate away
    loop, strategy = _run_synthetic(strategy_options("random")(name="random", seed=0, max_skipped=20),
                                    budget=10_000, threshold=-1.0)
    assert loop.stats.stopped_by == "strategy finished"
    assert loop.stats.gated_out > 0 and not any(r.evaluated for r in loop.all_results())
    # ended by the bound: 20 proposals (18 turned away, 2 over the memory limit), where the count
    # restarted by each turned-away draw ran through 7,973 of the 8,000 configurations
    assert strategy.skipped == 20 and len(loop.all_results()) == 20 < make_space().cardinality()
