"""Ray scaling: throughput of full evaluations with 1 vs 2 Ray workers on the digits
model, and with 1..16 simulated workers (each task a fixed-cost sleep) through the real
driver loop and Ray executor, to show that the driver is not the bottleneck.

    python experiments/bench/ray_scaling.py [--candidates 24] [--cost 0.2] [--tasks 64] [--write]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

from _results import DIGITS_SPEC, publish
from autocompress.engine import Setup
from autocompress.engine.driver import frozen_spec
from autocompress.engine.executors import RayExecutor
from autocompress.searching import (
    Constraints,
    Gate,
    SearchLoop,
    SearchSpace,
    SpaceDefinition,
    Task,
    TaskOutcome,
    Unit,
    create_strategy,
    drive,
    strategy_options,
)
from autocompress.spec import load_spec


def real_throughput(spec, candidates, workers: int) -> tuple[float, float]:
    """(seconds, evaluations per second) for fully evaluating ``candidates`` on ``workers`` Ray actors."""
    with tempfile.TemporaryDirectory() as run_dir:
        executor = RayExecutor(frozen_spec(spec), str(DIGITS_SPEC.parent), workers=workers, device="cpu",
                               address=None, proxy=True, run_dir=run_dir)
        try:
            pending = [Task(i, c, "full") for i, c in enumerate(candidates)]
            done = 0
            start = time.perf_counter()
            while done < len(candidates):
                while pending and executor.free():
                    executor.submit(pending.pop(0))
                done += len(executor.wait(timeout=5))
            seconds = time.perf_counter() - start
        finally:
            executor.shutdown()
    return seconds, len(candidates) / seconds


class FakeWorker:
    """An actor whose every task costs a fixed sleep (no model)."""

    def __init__(self, spec_data, spec_dir, *, proxy, device, run_dir):
        import os as _os

        self.cost = float(_os.environ.get("AUTOCOMPRESS_BENCH_COST", "0.2"))

    def info(self) -> dict:
        import os as _os
        import socket

        return {"pid": _os.getpid(), "node": socket.gethostname(), "device": "cpu"}

    def baseline(self) -> float:
        return 90.0

    def run(self, stage, candidate):
        import time as _time

        _time.sleep(self.cost)
        size = sum(candidate.get("prune", {}).values()) + sum(32 - b for b in candidate.get("bits", {}).values())
        return TaskOutcome(memory_bytes=max(1, 1_000_000 - 10_000 * int(size)), drift=0.01 * size,
                           accuracy=90.0 - 0.05 * size, seconds=self.cost)


def synthetic_space() -> SearchSpace:
    units = [Unit(f"blocks.{b}.mlp", "prune", "mlp", b, 4000) for b in range(4)]
    units += [Unit(f"blocks.{b}.fc", "bits", "mlp", b, 8000) for b in range(4)]
    return SearchSpace(units, SpaceDefinition(prune_rates=(0.0, 0.25, 0.5, 0.75), bits=(32, 16, 8, 4, 2),
                                              granularity="layer"))


def simulated_throughput(workers: int, tasks: int) -> tuple[int, float]:
    constraints = Constraints(baseline_accuracy=90.0, baseline_bytes=1_000_000, max_drop_points=1.5, min_saving=0.25)
    space = synthetic_space()
    strategy = create_strategy(strategy_options("random")(name="random", seed=0), space, constraints)
    loop = SearchLoop(strategy, Gate("auto", 1.5, enabled=False), constraints, proxy=True,
                      max_full_evaluations=tasks // 2)
    with tempfile.TemporaryDirectory() as run_dir:
        executor = RayExecutor({}, None, workers=workers, device="cpu", address=None, proxy=True, run_dir=run_dir,
                               actor_class=FakeWorker, local_cpus=max(workers, os.cpu_count() or 1))
        try:
            completed = [0]

            def count(_done) -> None:
                completed[0] += 1

            start = time.perf_counter()
            drive(loop, executor, on_completion=count)
            seconds = time.perf_counter() - start
        finally:
            executor.shutdown()
    return completed[0], completed[0] / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--cost", type=float, default=0.2, help="seconds per simulated task")
    parser.add_argument("--tasks", type=int, default=64, help="simulated tasks per worker count (probe + full)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    os.environ["AUTOCOMPRESS_BENCH_COST"] = str(args.cost)

    spec = load_spec(DIGITS_SPEC)
    space = Setup.open(spec, say=lambda _m: None).space
    rng = random.Random(0)
    candidates = {}
    while len(candidates) < args.candidates:
        c = space.candidate(tuple(rng.randrange(len(d.choices)) for d in space.dims))
        candidates[c.id] = c
    real = {w: real_throughput(spec, list(candidates.values()), w) for w in (1, 2)}
    for w, (s, rate) in real.items():
        print(f"real, {w} workers: {s:.1f} s, {rate:.2f} evaluations/s", file=sys.stderr)
    simulated = {}
    for w in args.workers:
        simulated[w] = simulated_throughput(w, args.tasks)
        print(f"simulated, {w} workers: {simulated[w][1]:.2f} tasks/s", file=sys.stderr)

    lines = [f"Real: {args.candidates} full evaluations of random block-granularity candidates of the digits "
             f"reference model (360 images each), one CPU and one torch thread per Ray actor, actor start-up "
             f"excluded.", "",
             "| workers | seconds | evaluations/s | speed-up vs 1 worker |", "|---:|---:|---:|---:|"]
    for w, (s, rate) in real.items():
        lines.append(f"| {w} | {s:.1f} | {rate:.2f} | {rate / real[1][1]:.2f}x |")
    lines += ["", f"Simulated: every task (probe or full) sleeps {args.cost:g} s in a Ray actor; a random strategy "
              f"through the real driver loop (`drive`, `SearchLoop`) and Ray executor, {args.tasks} tasks per row. "
              f"Ideal throughput is workers / {args.cost:g} s.", "",
              "| workers | tasks | tasks/s | ideal tasks/s | efficiency |", "|---:|---:|---:|---:|---:|"]
    for w, (n, rate) in simulated.items():
        ideal = w / args.cost
        lines.append(f"| {w} | {n} | {rate:.2f} | {ideal:.2f} | {rate / ideal:.0%} |")
    body = "\n".join(lines)
    publish("ray_scaling", "Ray scaling", "python experiments/bench/ray_scaling.py --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
