"""The held-out measurement after a search: the base model and every Pareto point not
measured yet, each on every image of the held-out split, sharded over the workers like a
full evaluation and run by the same :func:`~autocompress.searching.drive` as the search.

Each point is kept in the store as soon as all its shards are in, so a resume measures
only what is left.
"""

from __future__ import annotations

import base64
import time
from typing import Callable

import numpy as np

from autocompress.engine.pareto_file import pareto_document
from autocompress.errors import AutocompressError
from autocompress.searching import Candidate, SearchStats, StopReason, Task, drive, pack, shard_bounds, unpack

BASELINE = "baseline"  # the base model's entry among the held-out results


class _Base:
    """The base model as a held-out task's candidate."""

    id = BASELINE

    @staticmethod
    def to_dict() -> None:
        return None


class HoldoutLoop:
    """The held-out tasks as a loop :func:`~autocompress.searching.drive` runs: every shard of
    every point to measure, a point's figures stored once its last shard is in."""

    def __init__(self, store, todo: list[str], configs: dict, images: int, shard_images: int,
                 saved: dict, say: Callable[[str], None]):
        self.store, self.saved, self.say = store, saved, say
        self.shards = shard_bounds(images, shard_images)
        self.queue = [Task(key=i, candidate=_Base() if cid == BASELINE else Candidate.from_dict(configs[cid]),
                           stage="holdout", shard=shard)
                      for i, (cid, shard) in enumerate((cid, shard) for cid in todo for shard in self.shards)]
        self.counts: dict[str, list[int]] = {cid: [0, 0, 0] for cid in todo}  # correct, readable, shards done
        self.bits: dict[str, dict[int, np.ndarray]] = {cid: {} for cid in todo}  # correctness by shard
        self.failed: set[str] = set()
        self.in_flight = 0
        self.stats = SearchStats()
        self.ended: StopReason | None = None
        self._started = time.monotonic()

    @property
    def finished(self) -> bool:
        return not self.queue and self.in_flight == 0

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def take_obsolete(self) -> list[Task]:
        """Nothing is ever decided without a shard here: every shard of every point is wanted."""
        return []

    def stop(self, reason: StopReason) -> None:
        self.ended = reason
        self.queue.clear()

    def tasks(self, free: int) -> list[Task]:
        given, self.queue = self.queue[:max(free, 0)], self.queue[max(free, 0):]
        self.in_flight += len(given)
        return given

    def complete(self, task: Task, outcome, *, worker=None, attempts: int = 1) -> None:
        self.in_flight -= 1
        cid = task.candidate.id
        if outcome.error is not None:
            if cid not in self.failed:
                self.failed.add(cid)
                self.store.event("failed", f"held-out evaluation of {cid}: {outcome.error}")
                self.say(f"warning: the held-out evaluation of {cid} failed: {outcome.error}")
            return
        count = self.counts[cid]
        count[0] += outcome.correct
        count[1] += outcome.total
        count[2] += 1
        start, stop = task.shard
        self.bits[cid][start] = unpack(outcome.per_image, stop - start)
        if count[2] == len(self.shards) and cid not in self.failed:
            accuracy = 100.0 * count[0] / count[1] if count[1] else 0.0
            per_image = np.concatenate([self.bits[cid][s] for s in sorted(self.bits[cid])])
            self.saved["results"][cid] = {"accuracy": accuracy, "correct": count[0], "total": count[1],
                                          "per_image": base64.b64encode(pack(per_image)).decode("ascii")}
            self.store.set_meta("holdout", self.saved)
            self.say(f"held-out: {cid} {accuracy:.2f} % top-1 ({count[1]:,} images)")


def measure_holdout(store, executor, images: int, shard_images: int, say: Callable[[str], None],
                    on_idle: Callable[[], None] | None = None) -> None:
    """Measure the base model and every Pareto point not measured yet on the held-out split."""
    saved = store.meta("holdout") or {"images": images, "results": {}}
    if saved["images"] != images:
        raise AutocompressError(f"{store.run_dir}: the held-out split has {images} images now but had "
                                f"{saved['images']} before (the data changed); start a new run")
    configs = {r.result.candidate_id: r.candidate for r in store.records(("full",))}
    wanted = [BASELINE] + [p["id"] for p in pareto_document(store)["points"]]
    # measured by a version that kept no per-image correctness: again, for the paired held-out test
    todo = [cid for cid in wanted if "per_image" not in saved["results"].get(cid, {})]
    if not todo:
        return
    say(f"measuring {'the baseline and ' if BASELINE in todo else ''}"
        f"{len(todo) - (BASELINE in todo)} Pareto point(s) on the held-out split ({images:,} images the search "
        "never saw)")
    drive(HoldoutLoop(store, todo, configs, images, shard_images, saved, say), executor, on_idle=on_idle)
