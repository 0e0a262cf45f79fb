"""The search loop: ask, probe, gate, fully evaluate, tell. Pure logic over an evaluator.

The evaluator is anything with ``probe(candidate) -> (memory_bytes, drift or None)``
and ``full(candidate) -> accuracy``. The loop owns the gate and the results; a result
is cached by candidate id, so no candidate is fully evaluated twice and a repeated
probe costs nothing. A ``probe`` request computes the proxy only; without a proxy it
becomes a full evaluation (the strategy then ranks by accuracy). A ``full`` request
passes the gate first; a candidate that fails it is never fully evaluated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from autocompress.proxy.gate import Gate
from autocompress.search.base import Strategy
from autocompress.search.results import Constraints, Request, Result


class Evaluator(Protocol):
    def probe(self, candidate) -> tuple[int, float | None]: ...

    def full(self, candidate) -> float: ...


@dataclass
class SearchStats:
    full_evaluations: int = 0
    probes: int = 0
    gated_out: int = 0
    failed: int = 0
    cached: int = 0
    seconds: float = 0.0
    stopped_by: str = ""


class SearchLoop:
    def __init__(
        self,
        strategy: Strategy,
        evaluator: Evaluator,
        gate: Gate,
        constraints: Constraints,
        *,
        proxy: bool = True,
        max_full_evaluations: int = 60,
        max_probes: int | None = None,
        max_seconds: float | None = None,
        on_result: Callable[[Request, Result], None] | None = None,
    ):
        self.strategy, self.evaluator, self.gate, self.constraints = strategy, evaluator, gate, constraints
        self.proxy = proxy
        self.max_full = max_full_evaluations
        self.max_probes = max_probes if max_probes is not None else 100 * max_full_evaluations
        self.max_seconds = max_seconds
        self.on_result = on_result
        self.results: dict[str, Result] = {}
        self.order: list[str] = []  # candidate ids in the order they were first evaluated
        self.full_order: list[str] = []  # ids in the order of their full evaluations
        self.stats = SearchStats()

    # ------------------------------------------------------------------ one request

    def _remember(self, result: Result) -> Result:
        if result.candidate_id not in self.results:
            self.order.append(result.candidate_id)
        self.results[result.candidate_id] = result
        return result

    def _probe(self, request: Request) -> Result:
        candidate = request.candidate
        start = time.perf_counter()
        try:
            memory, drift = self.evaluator.probe(candidate)
        except Exception as error:  # a failed candidate is a result too
            self.stats.failed += 1
            return self._remember(Result(candidate.id, error=f"{type(error).__name__}: {error}",
                                         seconds=time.perf_counter() - start))
        if self.proxy:
            self.stats.probes += 1
        return self._remember(Result(
            candidate.id, memory_bytes=memory, memory_saving=1 - memory / self.constraints.baseline_bytes,
            drift=drift if self.proxy else None, seconds=time.perf_counter() - start,
        ))

    def _full(self, result: Result, request: Request, gated: bool) -> Result:
        if gated:
            decision = self.gate.decide(result.drift)
            if not decision.passed:
                self.stats.gated_out += 1
                return self._remember(replace(result, gate="fail", gate_reason=decision.reason))
            gate, reason = ("pass", decision.reason) if self.gate.enabled and self.proxy else ("off", "gate off")
        else:
            gate, reason = "off", "probe without a proxy: evaluated in full"
        start = time.perf_counter()
        try:
            accuracy = self.evaluator.full(request.candidate)
        except Exception as error:
            self.stats.failed += 1
            return self._remember(replace(result, gate=gate, gate_reason=reason,
                                          error=f"{type(error).__name__}: {error}"))
        self.stats.full_evaluations += 1
        self.full_order.append(result.candidate_id)
        drop = self.constraints.baseline_accuracy - accuracy
        evaluated = replace(
            result, gate=gate, gate_reason=reason, accuracy=accuracy, accuracy_drop=drop,
            feasible=self.constraints.feasible(accuracy, result.memory_bytes),
            seconds=result.seconds + time.perf_counter() - start,
        )
        self.gate.observe(result.drift, drop)
        return self._remember(evaluated)

    def handle(self, request: Request) -> Result | None:
        """Answer one request; None when the budget forbids the full evaluation it needs."""
        known = self.results.get(request.candidate.id)
        if known is None:
            known = self._probe(request)
        elif request.stage == "probe" or known.evaluated or known.gate == "fail" or known.error:
            self.stats.cached += 1
            return known
        if known.error is not None:
            return known
        wants_full = request.stage == "full" or not self.proxy
        if not wants_full:
            return known
        if self.stats.full_evaluations >= self.max_full and (request.stage == "probe" or not self._gate_blocks(known)):
            return None
        return self._full(known, request, gated=request.stage == "full")

    def _gate_blocks(self, result: Result) -> bool:
        return self.proxy and not self.gate.decide(result.drift).passed

    # ------------------------------------------------------------------ the loop

    def run(self, batch: int = 1) -> SearchStats:
        start = time.perf_counter()
        while True:
            if self.strategy.done:
                self.stats.stopped_by = "strategy finished"
                break
            if self.stats.full_evaluations >= self.max_full:
                self.stats.stopped_by = "full-evaluation budget"
                break
            if self.stats.probes >= self.max_probes:
                self.stats.stopped_by = "probe budget"
                break
            if self.max_seconds is not None and time.perf_counter() - start >= self.max_seconds:
                self.stats.stopped_by = "time budget"
                break
            requests = self.strategy.ask(batch)
            if not requests:
                self.stats.stopped_by = "strategy finished" if self.strategy.done else "strategy asked nothing"
                break
            exhausted = False
            for request in requests:
                result = self.handle(request)
                if result is None:
                    exhausted = True
                    break
                self.strategy.tell(request, result)
                if self.on_result is not None:
                    self.on_result(request, result)
            if exhausted:
                self.stats.stopped_by = "full-evaluation budget"
                break
        self.stats.seconds = time.perf_counter() - start
        return self.stats

    def all_results(self) -> list[Result]:
        return [self.results[i] for i in self.order]
