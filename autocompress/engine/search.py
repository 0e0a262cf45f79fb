"""Run a spec's search in memory, in this process, without a run directory (for experiments;
the `search` command uses :mod:`autocompress.engine.driver`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autocompress.compress import find_channel_groups, footprint, quantizable_layers
from autocompress.engine.evaluator import SessionEvaluator
from autocompress.engine.session import Session
from autocompress.engine.space import build_space
from autocompress.proxy import Gate
from autocompress.search import (
    Constraints,
    ParetoSet,
    Result,
    SearchLoop,
    SearchSpace,
    SearchStats,
    create_strategy,
    pareto_set,
)


@dataclass
class SearchOutcome:
    space: SearchSpace
    constraints: Constraints
    results: list[Result]  # every candidate, in the order first seen
    full_order: list[str]  # candidate ids in the order of their full evaluations
    pareto: ParetoSet
    stats: SearchStats
    gate: Gate
    candidates: dict  # id -> Candidate

    def full_evaluations_to(self, memory_bytes: int) -> int | None:
        """How many full evaluations it took to first reach a feasible point at most this size."""
        by_id = {r.candidate_id: r for r in self.results}
        for count, cid in enumerate(self.full_order, start=1):
            r = by_id[cid]
            if r.feasible and r.memory_bytes <= memory_bytes:
                return count
        return None


def run_search(
    session: Session,
    *,
    strategy_options=None,
    proxy: bool | None = None,
    max_full_evaluations: int | None = None,
    on_result: Callable | None = None,
    say: Callable[[str], None] = print,
) -> SearchOutcome:
    """Search the spec's space on the session's model; overrides are for experiments."""
    spec = session.spec
    proxy = spec.proxy.enabled if proxy is None else proxy
    groups = find_channel_groups(session.model, example=session.data.calibration[:8].to(session.device))
    space = build_space(spec, groups, quantizable_layers(session.model.net))
    evaluator = SessionEvaluator(session, groups, proxy=proxy)
    baseline_accuracy = evaluator.baseline_accuracy()
    constraints = Constraints.from_spec(spec.constraints, baseline_accuracy, footprint(session.model))
    gate = Gate(spec.proxy.threshold, constraints.max_drop_points, enabled=proxy)
    strategy = create_strategy(strategy_options or spec.strategy, space, constraints, proxy=proxy)
    say(f"search: {strategy.name} over {space.describe()}; baseline {baseline_accuracy:.2f} % top-1, "
        f"{constraints.baseline_bytes:,} bytes; budget {max_full_evaluations or spec.budget.max_full_evaluations} "
        f"full evaluations; proxy {'on' if proxy else 'off'}")
    candidates: dict = {}

    def remember(request, result):
        candidates[result.candidate_id] = request.candidate
        if on_result is not None:
            on_result(request, result)

    loop = SearchLoop(
        strategy, evaluator, gate, constraints, proxy=proxy,
        max_full_evaluations=max_full_evaluations or spec.budget.max_full_evaluations,
        max_seconds=spec.budget.max_hours * 3600 if spec.budget.max_hours else None,
        on_result=remember,
    )
    stats = loop.run()
    results = loop.all_results()
    pareto = pareto_set(results, constraints)
    say(f"search ended ({stats.stopped_by}): {stats.full_evaluations} full evaluations, {stats.probes} proxy "
        f"evaluations, {stats.gated_out} gated out, {stats.failed} failed, {stats.seconds:.0f} s")
    if pareto.best is not None:
        say(f"best feasible: {pareto.best.memory_bytes:,} bytes ({pareto.best.memory_saving:.1%} saved), "
            f"{pareto.best.accuracy:.2f} % top-1 ({pareto.best.accuracy_drop:+.2f} points)")
    else:
        misses = ", ".join(f"{r.memory_saving:.1%} saved at {r.accuracy_drop:+.2f} points" for r in pareto.near_misses)
        say(f"no feasible point found; nearest misses: {misses or 'none evaluated'}")
    return SearchOutcome(space, constraints, results, loop.full_order, pareto, stats, gate, candidates)
