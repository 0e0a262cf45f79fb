"""A run's progress, one typed record: the driver writes it into its session row (the
heartbeat, about once a second, and at the end); ``status``, the live display,
``pareto.json``'s statistics and the HTTP service read it back from there."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from autocompress.searching import SearchLoop, best_feasible


def best_summary(results) -> dict | None:
    """The best feasible point of ``results``, as progress and status show it."""
    best = best_feasible(results)
    return None if best is None else {
        "id": best.candidate_id, "memory_bytes": best.memory_bytes, "memory_saving": best.memory_saving,
        "accuracy": best.accuracy, "accuracy_drop": best.accuracy_drop, "energy_mj": best.energy_mj,
        "synops": best.synops, "latency_ms": best.latency_ms}


@dataclass
class Progress:
    full_evaluations: int = 0
    proxy_evaluations: int = 0
    gated_out: int = 0
    failed: int = 0
    cached: int = 0
    replayed: int = 0
    retries: int = 0
    workers_replaced: int = 0
    wall_seconds: float = 0.0
    early_stopped: int = 0  # full evaluations stopped early, either side (among full_evaluations)
    stopped_feasible: int = 0  # ... of them as certainly within the limit
    completed: int = 0  # stopped early, then validated on every image (they would be reported)
    validation_images: int = 0  # images read by full evaluations
    stopped_by: str = ""
    in_flight: int = 0
    max_full_evaluations: int | None = None
    best: dict | None = None

    @classmethod
    def of_loop(cls, loop: SearchLoop, *, retries: int, workers_replaced: int, max_full: int) -> Progress:
        stats = loop.stats
        return cls(full_evaluations=stats.full_evaluations, proxy_evaluations=stats.probes,
                   gated_out=stats.gated_out, failed=stats.failed, cached=stats.cached, replayed=stats.replayed,
                   retries=retries, workers_replaced=workers_replaced, wall_seconds=loop.elapsed(),
                   early_stopped=stats.early_stopped, stopped_feasible=stats.stopped_feasible,
                   completed=stats.completed, validation_images=stats.validation_images,
                   stopped_by=stats.stopped_by or loop.ended or "", in_flight=loop.in_flight,
                   max_full_evaluations=max_full, best=best_summary(loop.results.values()))

    @classmethod
    def from_dict(cls, data: dict | None) -> Progress:
        """A stored record, written by this version or an earlier one (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def session_progress(sessions: list[dict], state: str) -> Progress:
    """The progress of a run's last session (``RunStore.sessions()``), the run being in
    ``state`` (``RunStore.state()``): nothing is in flight unless its driver runs."""
    progress = Progress.from_dict(sessions[-1]["progress"] if sessions else None)
    if state != "running":
        progress.in_flight = 0  # what was in flight when the driver stopped is not running now
    return progress
