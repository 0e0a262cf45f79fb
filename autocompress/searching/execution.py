"""Running a search loop's tasks: the one driver loop (:func:`drive`) over an executor,
and the executor that runs tasks in this process (:class:`LocalExecutor`).

An executor has ``free()`` slots, ``submit(task)``, ``wait(timeout)`` for the tasks
that completed, ``baseline()`` and ``shutdown()``, and may have ``cancel(tasks)`` (running
tasks whose results are no longer wanted: they may end early, with any outcome). The engine adds one that runs tasks
on Ray actors; the driver, the experiments and the tests all go through :func:`drive`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from autocompress.searching.early import pack
from autocompress.searching.loop import SearchLoop, SearchStats, Task, TaskOutcome
from autocompress.searching.stops import StopReason


class Evaluator(Protocol):
    """What evaluates candidates: ``probe`` -> (memory bytes, drift or None); ``full`` ->
    top-1 %, or, given a ``shard`` of the validation order, an evaluation result with
    ``accuracy``, ``correct``, ``total`` and ``per_image`` (bool per image of the shard);
    ``holdout`` -> such a result over a shard of the held-out split (a candidate of
    ``None``: the base model; needed only by runs that hold a split out)."""

    def probe(self, candidate) -> tuple[int, float | None] | tuple[int, float | None, dict | None]: ...

    def full(self, candidate, shard: tuple[int, int] | None = None): ...

    def baseline(self): ...

    def holdout(self, candidate, shard: tuple[int, int] | None = None): ...


@dataclass
class Completion:
    task: Task
    outcome: TaskOutcome
    worker: str
    attempts: int = 1


def execute(evaluator: Evaluator, stage: str, candidate, shard: tuple[int, int] | None = None) -> TaskOutcome:
    """Run one task, timed; an exception is the candidate's failure, not the worker's."""
    start = time.perf_counter()
    try:
        if stage == "probe":
            memory, drift, *energy = evaluator.probe(candidate)  # (an evaluator may not count energy)
            return TaskOutcome(memory_bytes=memory, drift=drift, energy=energy[0] if energy else None,
                               seconds=time.perf_counter() - start)
        if stage == "holdout":  # the held-out split; a candidate without a config is the base model
            config = candidate.to_dict() if hasattr(candidate, "to_dict") else candidate
            value = evaluator.holdout(config, shard)
            return TaskOutcome(accuracy=value.accuracy, correct=value.correct, total=value.total,
                               per_image=pack(value.per_image), seconds=time.perf_counter() - start)
        value = evaluator.full(candidate) if shard is None else evaluator.full(candidate, shard)
        if isinstance(value, (int, float)):
            return TaskOutcome(accuracy=float(value), seconds=time.perf_counter() - start)
        return TaskOutcome(accuracy=value.accuracy, correct=value.correct, total=value.total,
                           per_image=pack(value.per_image), seconds=time.perf_counter() - start)
    except Exception as error:
        return TaskOutcome(error=f"{type(error).__name__}: {error}", seconds=time.perf_counter() - start)


def describe(task: Task) -> str:
    shard = f" images {task.shard[0]}-{task.shard[1]}" if task.shard else ""
    return f"{task.stage} {task.candidate.id}{shard}"


WorkerHook = Callable[..., None]  # (name, state=, task=, pid=, node=)


class LocalExecutor:
    """One evaluator in this process; a submitted task runs inside ``wait``."""

    name = "in-process"

    def __init__(self, evaluator: Evaluator, *, on_worker: WorkerHook | None = None):
        self.evaluator = evaluator
        self.pending: list[Task] = []
        self.on_worker = on_worker or (lambda *a, **k: None)
        self.on_worker(self.name, state="idle", pid=os.getpid(), node=socket.gethostname())

    def free(self) -> int:
        return 1 - len(self.pending)

    def submit(self, task: Task) -> None:
        self.pending.append(task)
        self.on_worker(self.name, state="busy", task=describe(task))

    def wait(self, timeout: float | None = None) -> list[Completion]:
        if not self.pending:
            return []
        task = self.pending.pop(0)
        outcome = execute(self.evaluator, task.stage, task.candidate, task.shard)
        self.on_worker(self.name, state="idle")
        return [Completion(task, outcome, self.name)]

    def baseline(self):
        return self.evaluator.baseline()

    def shutdown(self) -> None:
        self.pending.clear()


def drive(loop: SearchLoop, executor, *, on_completion: Callable[[Completion], None] | None = None,
          on_idle: Callable[[], None] | None = None) -> SearchStats:
    """Run ``loop`` on ``executor`` until it finishes: start as many tasks as there are
    free workers, hand each completion to the loop (then to ``on_completion``), call
    ``on_idle`` after each wait."""
    while True:
        for task in loop.tasks(executor.free()):
            executor.submit(task)
        if loop.finished:
            break
        if loop.in_flight == 0:  # nothing to wait for and nothing asked: end rather than spin
            loop.stop(StopReason.STRATEGY_ASKED_NOTHING)
            continue
        for done in executor.wait(timeout=1.0):
            loop.complete(done.task, done.outcome, worker=done.worker, attempts=done.attempts)
            if on_completion is not None:
                on_completion(done)
        obsolete = loop.take_obsolete()
        if obsolete and hasattr(executor, "cancel"):  # shards of a validation stopped early: free their workers
            executor.cancel(obsolete)
        if on_idle is not None:
            on_idle()
    loop.stats.stopped_by = loop.ended or StopReason.STRATEGY_FINISHED
    loop.stats.seconds = loop.elapsed()
    return loop.stats
