"""Cluster scaling model: greedy on the joint.yaml space (Spikformer-8-512, 224x224) with
1, 2, 4, 8 and 16 Ray workers, every task costing what it costs on the modelled GPU,
time-scaled to run here.

    python experiments/bench/cluster_scaling.py [--workers 1 2 4 8 16] [--budget 20] [--scale 0.05] [--write]

What runs is the real scheduler (``SearchLoop`` with the run's shards), driver loop
(``drive``), Ray executor (``RayExecutor``, one actor per worker) and run store (every
result journaled as the driver journals it), greedy over the search space that
experiments/imagenet/joint.yaml builds from the model (random weights: the space
depends on the structure only). What is modelled is inside each actor: a task sleeps
for its cost times ``--scale`` and returns numbers from a synthetic landscape that is
the same for every worker count (so every row walks the same candidates):

- a full validation of 50,000 images at ``--rate`` images/s (350: Spikformer-8-512, T=4,
  66.9 GFLOPs/image, FP32 on an A100), split into the run's shards (whole batches of 128,
  about 100 shards; each pays ``--shard-overhead`` s to start, the decoded cache's
  first batch);
- a probe: ``--probe`` s (the candidate's and the reference's forwards on 32
  calibration images, and the drift);
- building a candidate's model on a worker that has not built it yet: ``--build`` s
  (measured on this CPU for 8-512: 0.13-0.17 s).

Wall times are reported in modelled seconds (real seconds / scale). Early stopping is
off here (it only removes work); experiments/bench/early_stopping.py measures it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _results import publish
from autocompress.compress import find_channel_groups, quantizable_layers
from autocompress.engine import RunStore
from autocompress.engine.executors import RayExecutor
from autocompress.engine.space_file import build_space
from autocompress.models import create_model
from autocompress.searching import (
    Constraints,
    Gate,
    SearchLoop,
    TaskOutcome,
    create_strategy,
    default_shard_images,
    drive,
    shard_bounds,
)
from autocompress.spec import validate_spec

ROOT = Path(__file__).resolve().parents[2]
JOINT = ROOT / "experiments" / "imagenet" / "joint.yaml"
MODEL_ENV = "AUTOCOMPRESS_BENCH_MODEL"
IMAGES = 50_000


def joint_space():
    """The search space joint.yaml builds (model with random weights; no data needed)."""
    import torch

    data = yaml.safe_load(JOINT.read_text())
    data["model"]["checkpoint"] = None
    spec = validate_spec(data, check_paths=False)
    torch.manual_seed(0)
    model = create_model(spec.model).eval()
    groups = find_channel_groups(model, example=torch.randn(1, 3, 224, 224))
    return spec, build_space(spec, groups, quantizable_layers(model.net))


def landscape(candidate: dict, units: dict) -> tuple[int, float, float]:
    """(bytes, drift, top-1 %) of a candidate in the synthetic landscape: memory from the
    units' parameter counts, drift from how hard each unit is compressed (weighted by its
    size), accuracy falling slowly with drift and collapsing past a knee."""
    total = sum(size for kind, size in units.values() if kind == "bits")
    memory, drift = 0.0, 0.0
    bits = candidate.get("bits", {})
    for name, (kind, size) in units.items():
        if kind == "bits":
            width = bits.get(name, 32)
            memory += size * width / 8
            drift += size / total * (1 - math.log2(width) / 5) ** 2
    for name, rate in candidate.get("prune", {}).items():
        size = units[name][1]
        memory -= size * rate * 2
        drift += size / total * 4 * rate**2
    drop = 12 * drift + max(0.0, 300 * (drift - 0.2))
    return max(1, int(memory)), drift, 73.0 - drop


class ModelledWorker:
    """A Ray actor whose tasks cost the modelled time (slept, scaled) and answer from the landscape."""

    def __init__(self, spec_data, spec_dir, *, proxy, device, run_dir):
        self.model = json.loads(os.environ[MODEL_ENV])
        self.units = {name: tuple(v) for name, v in self.model["units"].items()}
        self.built: str | None = None

    def info(self) -> dict:
        import socket

        return {"pid": os.getpid(), "node": socket.gethostname(), "device": "modelled"}

    def baseline(self) -> float:
        return 73.0

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.model["scale"])

    def _build(self, candidate: dict) -> None:
        key = json.dumps(candidate, sort_keys=True)
        if key != self.built:
            self._sleep(self.model["build"])
            self.built = key

    def run(self, stage: str, candidate: dict, shard=None) -> TaskOutcome:
        start = time.perf_counter()
        self._build(candidate)
        memory, drift, accuracy = landscape(candidate, self.units)
        if stage == "probe":
            self._sleep(self.model["probe"])
            return TaskOutcome(memory_bytes=memory, drift=drift, seconds=time.perf_counter() - start)
        first, last = shard or (0, IMAGES)
        count = last - first
        self._sleep(self.model["shard_overhead"] + count / self.model["rate"])
        # correct counts that sum, over the shards, to the landscape's accuracy (as real shards do)
        correct = round(accuracy / 100 * last) - round(accuracy / 100 * first)
        return TaskOutcome(accuracy=100.0 * correct / count, correct=correct, total=count,
                           seconds=time.perf_counter() - start)


def run_greedy(spec, space, workers: int, args, store_dir: Path) -> dict:
    constraints = Constraints(73.0, sum(size * 4 for kind, size in _units(space).values() if kind == "bits"),
                              1.5, min_saving=0.85)
    strategy = create_strategy(spec.strategy, space, constraints, proxy=True)
    shards = shard_bounds(IMAGES, default_shard_images(IMAGES, spec.data.batch_size))
    store = RunStore.create(store_dir, {"spec": {"name": "cluster-scaling"}})
    store.begin_session("search", workers=workers, executor="ray", max_full_evaluations=args.budget)
    gate = Gate("auto", constraints.max_drop_points)

    def journal(kind, candidate, result, *, worker=None, attempts=1) -> None:
        store.record(kind, candidate.to_dict(), result, gate_threshold=gate.current_threshold(), worker=worker,
                     attempts=attempts)

    loop = SearchLoop(strategy, gate, constraints, proxy=True, max_full_evaluations=args.budget, shards=shards,
                      on_record=journal)
    executor = RayExecutor({}, None, workers=workers, device="cpu", address=None, proxy=True, run_dir=str(store_dir),
                           actor_class=ModelledWorker, local_cpus=max(workers, os.cpu_count() or 1))
    try:
        start = time.perf_counter()
        stats = drive(loop, executor)
        seconds = time.perf_counter() - start
    finally:
        executor.shutdown()
        store.close()
    fulls = [loop.results[c] for c in loop.full_order]
    return {"workers": workers, "seconds": seconds / args.scale, "full": stats.full_evaluations,
            "probes": stats.probes, "shards": len(shards), "path": [r.candidate_id for r in fulls],
            "best": min((r.memory_bytes for r in fulls if r.feasible), default=None)}


def _units(space) -> dict:
    return {unit.name: (unit.kind, unit.size) for unit in space.units.values()}


def modelled_ideal(args, shards: int, probes_per_full: float) -> dict:
    """The same costs without any scheduling or Ray overhead, per full evaluation and its probes."""
    shard = args.shard_overhead + IMAGES / shards / args.rate
    out = {}
    for w in args.workers:
        full = math.ceil(shards / w) * shard + args.build
        probe = math.ceil(probes_per_full / w) * (args.probe + args.build)
        out[w] = full + probe
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--budget", type=int, default=20, help="full evaluations per row (greedy stops there)")
    parser.add_argument("--scale", type=float, default=0.05, help="real seconds per modelled second")
    parser.add_argument("--rate", type=float, default=350.0, help="validation images/s of one GPU")
    parser.add_argument("--probe", type=float, default=0.4, help="seconds per probe")
    parser.add_argument("--build", type=float, default=0.15, help="seconds to build a candidate's model")
    parser.add_argument("--shard-overhead", type=float, default=0.02, help="seconds to start a shard")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()

    spec, space = joint_space()
    os.environ[MODEL_ENV] = json.dumps({"units": _units(space), "scale": args.scale, "rate": args.rate,
                                        "probe": args.probe, "build": args.build,
                                        "shard_overhead": args.shard_overhead})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            rows.append(run_greedy(spec, space, w, args, Path(tmp) / f"run-{w}"))
            r = rows[-1]
            print(f"{w:>2} workers: {r['seconds']:.0f} modelled s, {r['full']} full, {r['probes']} probes",
                  file=sys.stderr)
    base = rows[0]
    same = all(r["path"] == base["path"] for r in rows)
    ideal = modelled_ideal(args, base["shards"], base["probes"] / max(1, base["full"]))
    lines = [
        f"Greedy on the joint.yaml space ({space.describe()}), budget {args.budget} full evaluations, every "
        f"full validation of {IMAGES:,} images in {base['shards']} shards of "
        f"{default_shard_images(IMAGES, spec.data.batch_size)} images; modelled costs: {args.rate:g} images/s per GPU "
        f"({IMAGES / args.rate:.0f} s per full validation on one), probe {args.probe:g} s, build {args.build:g} s, "
        f"shard start {args.shard_overhead:g} s; time scale {args.scale:g}. Same candidates in every row: "
        f"{'yes' if same else 'NO'}.",
        "",
        "| workers | full evaluations | probes | modelled wall time | speed-up vs 1 | efficiency | ideal speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = base["seconds"] / r["seconds"]
        ideal_speedup = ideal[base["workers"]] / ideal[r["workers"]]
        lines.append(f"| {r['workers']} | {r['full']} | {r['probes']} | {r['seconds'] / 60:.1f} min | "
                     f"{speedup:.2f}x | {speedup / r['workers'] * base['workers']:.2f} | {ideal_speedup:.2f}x |")
    by = {r["workers"]: r for r in rows}
    summary = []
    if 1 in by and 8 in by:
        summary.append(f"speed-up at 8 workers: {by[1]['seconds'] / by[8]['seconds']:.2f}x (target >= 6x)")
    if 1 in by and 16 in by:
        summary.append(f"efficiency at 16 workers: {by[1]['seconds'] / by[16]['seconds'] / 16:.2f} (target >= 0.75)")
    if 1 in by:
        per_full = by[1]["seconds"] / by[1]["full"]
        summary.append(f"modelled time for joint.yaml's 150 full evaluations: {150 * per_full / 3600:.1f} h on 1 GPU"
                       + (f", {150 * by[8]['seconds'] / by[8]['full'] / 3600:.1f} h on 8" if 8 in by else ""))
    body = "\n".join(lines + [""] + summary)
    publish("cluster_scaling", "Cluster scaling model (sharded full validation)",
            "python experiments/bench/cluster_scaling.py --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
