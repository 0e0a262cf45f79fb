"""The search loop: ask, probe, gate, fully evaluate, tell. Pure logic, no I/O.

The loop turns a strategy's requests into *tasks* (a proxy evaluation ``probe`` or a
``full`` evaluation) with :meth:`SearchLoop.tasks` and takes their outcomes with
:meth:`SearchLoop.complete`; :func:`autocompress.searching.execution.drive` runs them on
an executor. A result is kept by candidate id, so no candidate is fully evaluated
twice. The budget counts full evaluations and, at ``probe_cost`` each, probes. A
``probe`` computes the proxy only (without a proxy it becomes a full evaluation); a
``full`` request passes the gate first.

With ``shards`` a full evaluation is split into tasks over disjoint ranges of the
validation order; idle workers take the shards of the evaluations in flight before
anything new is asked, so a strategy that waits for one result at a time still keeps
every worker busy. The shards' correct counts are summed (the result is the one a single
pass gives). With ``early_stopping`` (:mod:`autocompress.searching.early`) the contiguous
prefix of finished shards is compared with the baseline image by image after each shard;
when it is enabled, a candidate that is certainly infeasible stops there, and shards of
it still running are ignored when they complete. The paired counts (images worse and
better than the baseline) stay on the result: with ``constraints.confidence`` a
candidate's accuracy is feasible only when the upper confidence bound they give on its
drop is within the limit.

``prior`` holds results an earlier session of the run recorded. They are reused, not
evaluated again, and go through the same steps as fresh ones (the gate observes them,
the budget counts them, the strategy is told them in the order it asks), so with one
task at a time a deterministic strategy replays the earlier run exactly.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Mapping, Sequence

from autocompress.searching.base import Strategy
from autocompress.searching.early import EarlyStopping, Evidence, SequentialTest, discordant, unpack
from autocompress.searching.gate import Gate
from autocompress.searching.results import Constraints, Request, Result, pareto_set
from autocompress.searching.stops import StopReason


@dataclass
class SearchStats:
    full_evaluations: int = 0  # including those reused from an earlier run (``replayed``)
    probes: int = 0
    gated_out: int = 0
    failed: int = 0
    cached: int = 0
    replayed: int = 0  # probe and full results reused from the run store instead of evaluated
    retries: int = 0  # tasks run again because their worker died (counted by the engine)
    early_stopped: int = 0  # full evaluations stopped early (either side); counted in full_evaluations
    stopped_feasible: int = 0  # ... of them stopped as certainly feasible
    completed: int = 0  # stopped early, then validated on their remaining shards (they would be reported)
    validation_images: int = 0  # images read by full evaluations (where recorded)
    seconds: float = 0.0  # wall time, earlier sessions of the run included
    stopped_by: str = ""  # a StopReason's value ("error: ..." for a failed session)


@dataclass(frozen=True)
class Task:
    """One unit of work for an executor: the proxy evaluation, the full one, or (after
    the search, from the driver) the evaluation on the held-out split."""

    key: int
    candidate: object  # Candidate
    stage: Literal["probe", "full", "holdout"]
    shard: tuple[int, int] | None = None  # a full evaluation's positions [start, stop) in the validation order


@dataclass
class TaskOutcome:
    """What running a task gave: the numbers, or the error. A shard of a full evaluation
    gives its ``correct`` and readable ``total`` images and, packed, which were right."""

    memory_bytes: int | None = None
    drift: float | None = None
    accuracy: float | None = None
    seconds: float = 0.0
    error: str | None = None
    correct: int | None = None
    total: int | None = None
    per_image: bytes | None = None  # autocompress.searching.early.pack(bool per image)
    energy: dict | None = None  # a probe's spikes and energy per image (autocompress.proxy.energy summary)


@dataclass
class _Full:
    """A full evaluation in flight: its shards pending, running (task key -> shard) and done."""

    candidate: object
    pending: deque = field(default_factory=deque)
    running: dict = field(default_factory=dict)
    done: dict = field(default_factory=dict)
    looked: int = 0  # shards of the contiguous prefix taken into account
    correct: int = 0
    seen: int = 0
    worse: int = 0
    better: int = 0
    seconds: float = 0.0
    workers: set = field(default_factory=set)
    attempts: int = 1
    evidence: Evidence | None = None  # the sequential tests (None: compare only, or a completion)
    completing: Result | None = None  # a result stopped early, validated on its remaining shards
    # ... until it is certainly dominated (its drop beyond ``dominated_beyond`` points), when one is set
    dominated_beyond: float | None = None
    dominance: SequentialTest | None = None


RecordKind = Literal["probe", "full", "gate", "failed", "completed"]


def _reported_ids(front) -> set[str]:
    """The ids a Pareto set reports: its points, its near misses and its best point."""
    ids = {r.candidate_id for r in front.points + front.near_misses}
    if front.best is not None:
        ids.add(front.best.candidate_id)
    return ids


class SearchLoop:
    def __init__(
        self,
        strategy: Strategy,
        gate: Gate,
        constraints: Constraints,
        *,
        proxy: bool = True,
        max_full_evaluations: int = 60,
        max_probes: int | None = None,
        probe_cost: float = 0.0,
        max_seconds: float | None = None,
        prior: Mapping[str, Result] | None = None,
        elapsed_before: float = 0.0,
        shards: Sequence[tuple[int, int]] | None = None,
        early_stopping: EarlyStopping | None = None,
        on_result: Callable[[Request, Result], None] | None = None,
        on_record: Callable[..., None] | None = None,  # (kind, candidate, result, worker=, attempts=)
    ):
        self.strategy, self.gate, self.constraints = strategy, gate, constraints
        self.proxy = proxy
        self.max_full = max_full_evaluations
        self.max_probes = max_probes if max_probes is not None else 100 * max_full_evaluations
        self.probe_cost = probe_cost
        self.max_seconds = max_seconds
        self.prior = dict(prior or {})
        self.elapsed_before = elapsed_before
        self.on_result = on_result
        self.on_record = on_record
        self.shards = list(shards) if shards else None
        self.early_stopping = early_stopping
        if early_stopping is not None and early_stopping.shards != self.shards:
            raise ValueError("early stopping looks after each shard: give it the loop's shards")
        self.results: dict[str, Result] = {}
        self.order: list[str] = []  # candidate ids in the order they were first evaluated
        self.full_order: list[str] = []  # ids in the order of their full evaluations
        self.stats = SearchStats(seconds=elapsed_before)
        self.ended: StopReason | None = None  # why the loop stopped asking (the run ends once nothing is in flight)
        self._queue: deque[Request] = deque()  # asked, not handled yet
        self._ready: deque[tuple[Request, bool]] = deque()  # (request, originated a task) to handle first
        self._busy: dict[str, str] = {}  # candidate id -> the stage in flight for it
        self._tasks: dict[int, Task] = {}  # task key -> task, every task running
        self._fulls: dict[str, _Full] = {}  # candidate id -> its full evaluation in flight
        self._parked: dict[str, list[tuple[Request, bool]]] = {}  # requests waiting on that task
        self._gate_of: dict[str, tuple[str, str]] = {}  # gate state of a full evaluation in flight
        self._obsolete: list[Task] = []  # running shards of validations decided without them (to cancel)
        self._round: deque[tuple[Result, float | None]] = deque()  # candidates stopped early still to complete in this round
        self._candidates: dict[str, object] = {}  # candidate id -> candidate, of full evaluations (for completions)
        self._uncompletable: set[str] = set()  # candidates stopped early whose completion failed: left estimates
        self._next_key = 0
        self._start = time.perf_counter()

    # ------------------------------------------------------------------ bookkeeping

    @property
    def in_flight(self) -> int:
        """Tasks running (shards of an evaluation already decided included, until they end)."""
        return len(self._tasks)

    @property
    def finished(self) -> bool:
        """Ended, nothing in flight, and nothing stopped as feasible left that would be reported."""
        if self.ended is None or self._busy:
            return False
        return self.ended == StopReason.INTERRUPTED or self.early_stopping is None or not (
            self._round or self._to_complete())

    def take_obsolete(self) -> list[Task]:
        """Running tasks whose results are no longer wanted (shards of a validation stopped
        early), once each: the executor may cancel them so that their workers move on."""
        out, self._obsolete = self._obsolete, []
        return out

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._start

    def _remember(self, result: Result) -> Result:
        if result.candidate_id not in self.results:
            self.order.append(result.candidate_id)
        self.results[result.candidate_id] = result
        return result

    def _record(self, kind: RecordKind, candidate, result: Result, worker: str | None = None,
                attempts: int = 1) -> None:
        if self.on_record is not None:
            self.on_record(kind, candidate, result, worker=worker, attempts=attempts)

    def _tell(self, request: Request, result: Result) -> None:
        self.strategy.tell(request, result)
        if self.on_result is not None:
            self.on_result(request, result)

    def _end(self, reason: StopReason) -> None:
        if self.ended is None:
            self.ended = reason

    def stop(self, reason: StopReason) -> None:
        """End the search: nothing new is started; tasks in flight may still complete."""
        self._end(reason)

    def _probes_in_flight(self) -> int:
        return sum(1 for stage in self._busy.values() if stage == "probe")

    def _full_in_flight(self) -> int:
        return len(self._fulls)

    def spent(self) -> float:
        """The budget used, in full evaluations: those done, and the probes at ``probe_cost`` each."""
        return self.stats.full_evaluations + self.probe_cost * self.stats.probes

    def _task(self, candidate, stage: str, shard: tuple[int, int] | None = None) -> Task:
        task = Task(self._next_key, candidate, stage, shard)
        self._next_key += 1
        self._tasks[task.key] = task
        return task

    def _dispatch(self, request: Request, stage: str) -> Task | None:
        if self.ended is not None:
            return None  # the run is ending: the request stays unanswered
        if stage == "probe" and self.proxy and self.stats.probes + self._probes_in_flight() >= self.max_probes:
            self._end(StopReason.PROBE_BUDGET)  # not one probe over it, however many a step asked for
            return None
        cid = request.candidate.id
        self._busy[cid] = stage
        self._parked.setdefault(cid, []).append((request, True))
        if stage == "probe":
            return self._task(request.candidate, stage)
        evidence = self.early_stopping.start() if self.early_stopping is not None else None
        self._fulls[cid] = _Full(request.candidate, deque(range(len(self.shards) if self.shards else 1)),
                                 evidence=evidence)
        return self._next_shard()

    def _next_shard(self) -> Task | None:
        """A shard of the oldest full evaluation in flight that has one waiting."""
        for full in self._fulls.values():
            if full.pending:
                index = full.pending.popleft()
                task = self._task(full.candidate, "full", self.shards[index] if self.shards else None)
                full.running[task.key] = index
                return task
        return None

    # ------------------------------------------------------------------ one request

    def _step(self, request: Request, origin: bool) -> Task | None:
        """Advance one request: a task to run, or None (answered, parked, or dropped)."""
        cid = request.candidate.id
        if cid in self._busy:
            self._parked.setdefault(cid, []).append((request, False))
            return None
        known = self.results.get(cid)
        if known is None:
            prior = self.prior.get(cid)
            if prior is None:
                return self._dispatch(request, "probe")
            known = self._replay_probe(prior)
        elif (known.evaluated or known.gate == "fail" or known.error
              or (request.stage == "probe" and (self.proxy or not origin))):
            if not origin:
                self.stats.cached += 1
            self._tell(request, known)
            return None
        if known.error is not None or not (request.stage == "full" or not self.proxy):
            self._tell(request, known)
            return None
        gated = request.stage == "full"
        if gated:
            decision = self.gate.decide(known.drift)
            prior = self.prior.get(cid)
            if not decision.passed and not (prior is not None and prior.evaluated):
                self.stats.gated_out += 1
                result = self._remember(replace(known, gate="fail", gate_reason=decision.reason))
                self._record("gate", request.candidate, result)
                self._tell(request, result)
                return None
            state = ("pass", decision.reason) if self.gate.enabled and self.proxy else ("off", "gate off")
        else:
            state = ("off", "probe without a proxy: evaluated in full")
        if self.spent() + self._full_in_flight() > self.max_full - 1 + 1e-9:
            self._end(StopReason.FULL_BUDGET)
            return None
        self._candidates[cid] = request.candidate
        prior = self.prior.get(cid)
        if prior is not None and (prior.evaluated or prior.error is not None):
            self._tell(request, self._replay_full(known, prior, state))
            return None
        self._gate_of[cid] = state
        return self._dispatch(request, "full")

    def _replay_probe(self, prior: Result) -> Result:
        self.stats.replayed += 1
        if prior.memory_bytes is None:  # the probe itself failed
            self.stats.failed += 1
            return self._remember(Result(prior.candidate_id, error=prior.error, seconds=prior.seconds))
        if self.proxy:
            self.stats.probes += 1
        return self._remember(Result(prior.candidate_id, memory_bytes=prior.memory_bytes,
                                     memory_saving=prior.memory_saving, drift=prior.drift))

    def _replay_full(self, known: Result, prior: Result, state: tuple[str, str]) -> Result:
        self.stats.replayed += 1
        if prior.error is not None:
            self.stats.failed += 1
            return self._remember(replace(known, gate=state[0], gate_reason=state[1], error=prior.error))
        stop = prior.stop if prior.early_stopped else None
        if prior.early_stopped and stop is None:
            stop = "infeasible"  # stored before validations stopped on the feasible side
        result = self._evaluated(known, prior.accuracy, prior.seconds, state, images=prior.images, stop=stop,
                                 drop_bound=prior.drop_bound, paired=(prior.worse, prior.better),
                                 stopped_at=(prior.positions, prior.correct, prior.drop_low, prior.drop_high))
        if prior.stop is not None and not prior.early_stopped:  # stopped, then completed in an earlier session
            self.stats.early_stopped += 1
            self.stats.stopped_feasible += prior.stop == "feasible"
            self.stats.completed += 1
            result = self._remember(replace(result, stop=prior.stop))
        return result

    def _evaluated(self, known: Result, accuracy: float, seconds: float, state: tuple[str, str], *,
                   images: int | None = None, stop: str | None = None, drop_bound: float | None = None,
                   paired: tuple[int | None, int | None] = (None, None),
                   stopped_at: tuple = (None, None, None, None)) -> Result:
        """A full evaluation decided: exact (``stop`` None) or stopped early on the side ``stop``."""
        self.stats.full_evaluations += 1
        self.stats.early_stopped += stop is not None
        self.stats.stopped_feasible += stop == "feasible"
        self.stats.validation_images += images or 0
        self.full_order.append(known.candidate_id)
        drop = self.constraints.baseline_accuracy - accuracy
        worse, better = paired
        upper = None if stop is not None else self.constraints.drop_upper(worse, better, images)
        if stop == "infeasible":
            feasible = False
        elif stop == "feasible":  # the accuracy is certainly within the limit; the rest is measured
            feasible = self.constraints.feasible(self.constraints.baseline_accuracy, known.memory_bytes,
                                                 known.energy_mj, known.latency_ms)
        else:
            feasible = self.constraints.feasible(accuracy, known.memory_bytes, known.energy_mj, known.latency_ms, upper)
        positions, correct, low, high = stopped_at if stop is not None else (None, None, None, None)
        result = replace(known, gate=state[0], gate_reason=state[1], accuracy=accuracy, accuracy_drop=drop,
                         feasible=feasible, seconds=known.seconds + seconds, images=images,
                         early_stopped=stop is not None, drop_bound=drop_bound, worse=worse, better=better,
                         drop_upper=upper, stop=stop, positions=positions, correct=correct, drop_low=low,
                         drop_high=high)
        self.gate.observe(known.drift, drop if upper is None else upper)  # calibrated on the drop feasibility uses
        return self._remember(result)

    # ------------------------------------------------------------------ the event interface

    def _ask_reason(self) -> StopReason | None:
        """Why no new request may be asked for (None: ask)."""
        if self.strategy.done:
            return StopReason.STRATEGY_FINISHED
        if self.spent() >= self.max_full - 1e-9:
            return StopReason.FULL_BUDGET
        if self.stats.probes >= self.max_probes:
            return StopReason.PROBE_BUDGET
        if self.max_seconds is not None and self.elapsed() >= self.max_seconds:
            return StopReason.TIME_BUDGET
        return None

    def tasks(self, free: int) -> list[Task]:
        """Advance the search; return up to ``free`` tasks to start now. Requests that
        need no evaluation (known results, gate failures, replayed results) are
        answered on the way."""
        out: list[Task] = []
        while len(out) < free:
            shard = self._next_shard()  # evaluations in flight first, even when the run is ending
            if shard is not None:
                out.append(shard)
                continue
            if self._ready:
                request, origin = self._ready.popleft()
            elif self.ended is not None:
                task = self._next_completion()
                if task is None:
                    break
                out.append(task)
                continue
            elif self._queue:
                request, origin = self._queue.popleft(), False
            else:
                reason = self._ask_reason()
                if reason is not None:
                    self._end(reason)
                    continue  # ended: what would be reported may still need completing
                self.strategy.full_left = int(self.max_full - self.spent() - self._full_in_flight() + 1e-9)
                requests = self.strategy.ask(free - len(out))
                if not requests:
                    if not self._busy and not out:
                        self._end(StopReason.STRATEGY_FINISHED if self.strategy.done else StopReason.STRATEGY_ASKED_NOTHING)
                        continue
                    break  # otherwise: the strategy waits for results in flight
                self._queue.extend(requests)
                continue
            task = self._step(request, origin)
            if task is not None:
                out.append(task)
        return out

    def complete(self, task: Task, outcome: TaskOutcome, *, worker: str | None = None,
                 attempts: int = 1) -> Result | None:
        """A task's outcome (from ``worker``, after ``attempts`` tries): record it, then
        answer the requests that waited on it. None: a shard of a full evaluation that is
        not decided yet (or was decided without it)."""
        cid = task.candidate.id
        self._tasks.pop(task.key, None)
        if task.stage == "full":
            return self._complete_full(task, outcome, worker, attempts)
        if outcome.error is not None:
            self.stats.failed += 1
            result = self._remember(Result(cid, error=outcome.error, seconds=outcome.seconds))
            self._record("failed", task.candidate, result, worker, attempts)
        else:
            if self.proxy:
                self.stats.probes += 1
            energy = outcome.energy or {}
            result = self._remember(Result(
                cid, memory_bytes=outcome.memory_bytes,
                memory_saving=1 - outcome.memory_bytes / self.constraints.baseline_bytes,
                drift=outcome.drift if self.proxy else None, seconds=outcome.seconds,
                energy_mj=energy.get("energy_mj"), synops=energy.get("synops"),
                firing_rate=energy.get("firing_rate"), rates=energy.get("rates"),
                latency_ms=energy.get("latency_ms"), latency_batch_ms=energy.get("latency_batch_ms"),
            ))
            self._record("probe", task.candidate, result, worker, attempts)
        return self._release(cid, result)

    def _release(self, cid: str, result: Result) -> Result:
        """The candidate is decided: answer the requests that waited on it."""
        self._busy.pop(cid, None)
        self._ready.extendleft(reversed(self._parked.pop(cid, [])))
        self.stats.seconds = self.elapsed()
        return result

    def _complete_full(self, task: Task, outcome: TaskOutcome, worker: str | None, attempts: int) -> Result | None:
        cid = task.candidate.id
        full = self._fulls.get(cid)
        if full is None or task.key not in full.running:
            return None  # a shard of an evaluation already decided (stopped early, or failed)
        index = full.running.pop(task.key)
        full.seconds += outcome.seconds
        full.attempts = max(full.attempts, attempts)
        if worker is not None:
            full.workers.add(worker)
        known = self.results[cid]
        if outcome.error is not None and full.completing is not None:
            del self._fulls[cid]  # the completion failed: the candidate stays an estimate (a resume tries again)
            self._uncompletable.add(cid)
            self._obsolete += [self._tasks[key] for key in full.running if key in self._tasks]
            return self._release(cid, full.completing)
        if outcome.error is not None:
            del self._fulls[cid]
            state = self._gate_of.pop(cid)
            self.stats.failed += 1
            result = self._remember(replace(known, gate=state[0], gate_reason=state[1], error=outcome.error,
                                            seconds=known.seconds + full.seconds))
            self._record("failed", task.candidate, result, self._workers(full), full.attempts)
            return self._release(cid, result)
        if self.shards is None:  # one task over the whole set
            del self._fulls[cid]
            result = self._evaluated(known, outcome.accuracy, outcome.seconds, self._gate_of.pop(cid),
                                     images=outcome.total)
            self._record("full", task.candidate, result, self._workers(full), full.attempts)
            return self._release(cid, result)
        full.done[index] = outcome
        side = None
        while full.looked in full.done and side is None:  # the contiguous prefix, one look per shard
            part = full.done.pop(full.looked)
            full.looked += 1
            full.correct += part.correct
            full.seen += part.total
            if self.early_stopping is not None:
                start, stop = self.shards[full.looked - 1]
                per_image = unpack(part.per_image, stop - start)
                if full.evidence is not None:
                    side = full.evidence.add(per_image)
                    full.worse, full.better = full.evidence.worse, full.evidence.better
                else:  # a completion: counts, and the test of being dominated where there is one
                    d = self.early_stopping.differences(full.looked - 1, per_image)
                    worse, better = discordant(d)
                    full.worse, full.better = full.worse + worse, full.better + better
                    if full.dominance is not None and full.dominance.update(d.astype(float))[0] \
                            and full.looked < len(self.shards):  # (at the last shard it is exact anyway)
                        side = "dominated"
        if side is None and full.looked < len(self.shards):
            return None  # shards still to come
        del self._fulls[cid]
        self._obsolete += [self._tasks[key] for key in full.running if key in self._tasks]  # decided without them
        if full.completing is not None:
            if side == "dominated":
                return self._dominated(task.candidate, full)
            return self._completed(task.candidate, full)
        state = self._gate_of.pop(cid)
        if side is not None:
            evidence = full.evidence
            assert evidence is not None
            low, high = evidence.bounds()
            # the paired estimate over the images seen (the bounds are computed from the same pairs)
            accuracy = self.constraints.baseline_accuracy - 100.0 * (full.worse - full.better) / max(full.seen, 1)
            result = self._evaluated(known, accuracy, full.seconds, state, images=full.seen, stop=side,
                                     drop_bound=low if side == "infeasible" else high,
                                     paired=(full.worse, full.better),
                                     stopped_at=(evidence.positions, full.correct, low, high))
        else:
            if full.seen == 0:
                raise RuntimeError("no readable validation image in any shard")
            paired = (full.worse, full.better) if self.early_stopping is not None else (None, None)
            result = self._evaluated(known, 100.0 * full.correct / full.seen, full.seconds, state,
                                     images=full.seen, paired=paired)
        self._record("full", task.candidate, result, self._workers(full), full.attempts)
        return self._release(cid, result)

    # ------------------------------------------------------------------ completing what would be reported

    def _completed(self, candidate, full: _Full) -> Result:
        """A candidate stopped early, now validated on every image: its exact result
        replaces the estimate (the strategy was told the estimate and is not told again)."""
        stopped = full.completing
        assert stopped is not None
        if full.seen == 0:
            raise RuntimeError("no readable validation image in any shard")
        accuracy = 100.0 * full.correct / full.seen
        upper = self.constraints.drop_upper(full.worse, full.better, full.seen)
        result = replace(stopped, accuracy=accuracy, accuracy_drop=self.constraints.baseline_accuracy - accuracy,
                         feasible=self.constraints.feasible(accuracy, stopped.memory_bytes, stopped.energy_mj,
                                                            stopped.latency_ms, upper),
                         seconds=stopped.seconds + full.seconds, images=full.seen, early_stopped=False,
                         worse=full.worse, better=full.better, drop_upper=upper)
        self.stats.completed += 1
        return self._continued(candidate, full, result)

    def _dominated(self, candidate, full: _Full) -> Result:
        """A completion that showed the candidate certainly dominated by an exact point
        before its last shard: it stays an estimate, over the images read so far, its lower
        drop bound raised to what the test showed."""
        stopped = full.completing
        assert stopped is not None and full.dominated_beyond is not None
        accuracy = self.constraints.baseline_accuracy - 100.0 * (full.worse - full.better) / max(full.seen, 1)
        result = replace(stopped, accuracy=accuracy, accuracy_drop=self.constraints.baseline_accuracy - accuracy,
                         seconds=stopped.seconds + full.seconds, images=full.seen, worse=full.worse,
                         better=full.better, positions=self.shards[full.looked - 1][1], correct=full.correct,
                         drop_low=max(stopped.drop_low if stopped.drop_low is not None else -100.0,
                                      full.dominated_beyond))
        return self._continued(candidate, full, result)

    def _continued(self, candidate, full: _Full, result: Result) -> Result:
        """A stopped validation continued (to the end, or until certainly dominated): its
        images counted, its journal row replaced, the candidate free again."""
        assert full.completing is not None
        self.stats.validation_images += full.seen - (full.completing.images or 0)
        self._remember(result)
        self._record("completed", candidate, result, self._workers(full), full.attempts)
        return self._release(result.candidate_id, result)

    def _dominating_accuracy(self, result: Result) -> float | None:
        """The best exact accuracy among results at least as good as ``result`` in every
        other objective (memory, and energy and latency where they are objectives)."""
        names = self.constraints.objectives()
        best = None
        for other in self.results.values():
            if not other.exact or other.candidate_id == result.candidate_id:
                continue
            values = [(getattr(other, n), getattr(result, n)) for n in names]
            if any(a is None or b is None or a > b for a, b in values):
                continue
            if best is None or other.accuracy > best:
                best = other.accuracy
        return best

    def _to_complete(self) -> list[tuple[Result, float | None]]:
        """Candidates stopped early that would be reported: on the Pareto set, the best
        feasible point or a near miss of the results with each of them counted at the most
        its bounds allow (its accuracy at the baseline's minus its lower drop bound), so
        that no candidate whose exact accuracy would make it a point is left an estimate.
        Either side: a collapsed candidate stopped as infeasible can still be the front's
        smallest point (the reported set is the one validating every image gives)."""
        stopped = [r for r in self.results.values() if r.early_stopped and r.candidate_id not in self._busy
                   and r.error is None and r.candidate_id not in self._uncompletable]
        if not stopped:
            return []
        base = self.constraints.baseline_accuracy
        hopeful = {r.candidate_id: replace(r, early_stopped=False, accuracy=base - r.drop_low, accuracy_drop=r.drop_low,
                                           drop_upper=None) for r in stopped if r.drop_low is not None}
        merged = [hopeful.get(r.candidate_id, r) for r in self.results.values()]
        front = pareto_set(merged, self.constraints)
        reported = _reported_ids(front)
        # which of them its estimate says is a point: validated on every image; the others only until
        # they are certainly dominated by an exact point (a test against that point's accuracy)
        guessed = {r.candidate_id: replace(r, early_stopped=False, drop_upper=None) for r in stopped}
        points = _reported_ids(pareto_set([guessed.get(r.candidate_id, r) for r in self.results.values()],
                                          self.constraints))
        out: list[tuple[Result, float | None]] = []
        for r in stopped:
            if r.candidate_id not in reported and r.drop_low is not None:
                continue
            dominating = None if r.candidate_id in points or r.stop == "feasible" and front.best is not None \
                and front.best.candidate_id == r.candidate_id else self._dominating_accuracy(r)
            out.append((r, None if dominating is None else self.constraints.baseline_accuracy - dominating))
        return out

    def _next_completion(self) -> Task | None:
        """Start completing the next candidate stopped early that would be reported,
        once the search has ended (not after an interruption). In rounds: a round is every
        candidate :meth:`_to_complete` names once nothing else is in flight, so which are
        completed depends on the results alone, not on the number of workers."""
        if self.ended == StopReason.INTERRUPTED or self.early_stopping is None or self.shards is None:
            return None
        if not self._round and not self._busy:
            self._round.extend(self._to_complete())
        while self._round:
            result, beyond = self._round.popleft()
            cid = result.candidate_id
            positions = result.positions or 0
            pending = deque(i for i, (start, _) in enumerate(self.shards) if start >= positions)
            candidate = self._candidates.get(cid)
            if candidate is None or not pending:  # (cannot happen: kept out of later rounds, never a spin)
                self._uncompletable.add(cid)
                continue
            self._busy[cid] = "full"
            dominance = None
            if beyond is not None:  # the images left decide: the drop over all N beyond `beyond`, in their terms
                total, left = len(self.early_stopping.baseline), len(self.early_stopping.baseline) - positions
                threshold = (total * beyond / 100 - ((result.worse or 0) - (result.better or 0))) / left
                dominance = SequentialTest(left, [threshold], "infeasible", self.early_stopping.alpha)
            self._fulls[cid] = _Full(candidate, pending, looked=pending[0], correct=result.correct or 0,
                                     seen=result.images or 0, worse=result.worse or 0, better=result.better or 0,
                                     completing=result, dominated_beyond=beyond, dominance=dominance)
            return self._next_shard()
        return None

    @staticmethod
    def _workers(full: _Full) -> str | None:
        names = sorted(full.workers)
        if not names:
            return None
        return ",".join(names) if len(names) <= 4 else f"{len(names)} workers"

    def all_results(self) -> list[Result]:
        return [self.results[i] for i in self.order]
