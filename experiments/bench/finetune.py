"""Recovery fine-tuning on the digits reference: the demo's search, then
`autocompress finetune` of its best feasible point and every infeasible Pareto point
(the near misses) at the demo spec's settings: accuracy before and after, feasibility,
and the best feasible point after fine-tuning against the untuned best. Then, on the
nearest miss: distillation off, on the logits, on the logits and the membrane
potentials (same epochs, three seeds each); and Ray Train with 2 CPU workers against one
process (same settings).

    python experiments/bench/finetune.py [--budget 60] [--write]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from _results import DIGITS_SPEC, budget_arguments, publish
from autocompress.engine import start_search
from autocompress.engine.finetune import finetune
from autocompress.spec import load_spec


def quiet(_message: str) -> None:
    pass


def tune(run: Path, point: str, overrides: list[str] = (), workers: int | None = None) -> tuple[dict, float]:
    started = time.perf_counter()
    [entry] = finetune(run, [point], overrides=list(overrides), workers=workers, restart=True, say=quiet,
                       progress=False)
    return entry, time.perf_counter() - started


def main() -> int:
    args = budget_arguments(__doc__, budget=60)
    spec = load_spec(DIGITS_SPEC, overrides=[f"budget.max_full_evaluations={args.budget}"])
    settings = spec.finetune
    folder = Path(tempfile.mkdtemp(prefix="autocompress-bench-finetune-"))
    try:
        spec.output.run_dir = folder / "run"
        document = start_search(spec, say=quiet)
        run = folder / "run"
        best = next(p for p in document["points"] if p["id"] == document["best"])
        misses = [p for p in document["points"] if not p["feasible"]]
        lines = [f"Digits reference (baseline {document['baseline']['accuracy']:.2f} %, 360 validation images), the "
                 f"demo's greedy search ({document['statistics']['full_evaluations']} full evaluations), 1.5 points "
                 f"allowed. Fine-tuning at the demo spec's settings: {settings.epochs} epochs on the 1,437 training "
                 f"images, {settings.optimizer} lr {settings.lr:g} {settings.schedule}, batch {settings.batch_size}, "
                 f"distillation on the logits (weight {settings.distillation.logits:g}, T "
                 f"{settings.distillation.temperature:g}) and the membrane potentials (weight "
                 f"{settings.distillation.membrane:g}); one process. Accuracy after is the exported tuned "
                 "file's, on the same 360 images the search measured (the training never sees them, and the last "
                 "epoch is kept whatever they say).", "",
                 "| point | bytes | saved | top-1 before | top-1 after | drop before | drop after | feasible before "
                 "| feasible after | seconds |", "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
        tuned = []
        for point in [best] + misses:
            entry, seconds = tune(run, point["id"])
            tuned.append((point, entry))
            lines.append(f"| {point['id']} | {point['memory_bytes']:,} | {point['memory_saving']:.1%} | "
                         f"{entry['accuracy_before']:.2f} | {entry['accuracy']:.2f} | "
                         f"{entry['accuracy_drop_before']:+.2f} | {entry['accuracy_drop']:+.2f} | "
                         f"{'yes' if entry['feasible_before'] else 'no'} | {'yes' if entry['feasible'] else 'no'} | "
                         f"{seconds:.0f} |")
            print(lines[-1], flush=True)
        recovered = [(p, e) for p, e in tuned if not e["feasible_before"] and e["feasible"]]
        smallest = min((e["memory_bytes"] for _, e in tuned if e["feasible"]), default=None)
        lines += ["", f"- Untuned best feasible point: {best['id']}, {best['memory_bytes']:,} bytes "
                      f"({best['memory_saving']:.1%} saved, drop {best['accuracy_drop']:+.2f}).",
                  f"- Infeasible before and feasible after: {len(recovered)} of {len(misses)} near misses"
                  + ("" if not recovered else ": " + ", ".join(f"{p['id']} ({p['memory_bytes']:,} bytes)"
                                                            for p, _ in recovered)) + ".",
                  "- Best feasible point after fine-tuning: " + ("none" if smallest is None else
                  f"{smallest:,} bytes, {smallest / best['memory_bytes']:.2f}x the untuned best's "
                  f"({1 - smallest / document['baseline']['memory_bytes']:.1%} saved)") + "."]

        # distillation variants on the nearest miss (the least accuracy drop among the infeasible points)
        target = min(misses, key=lambda p: p["accuracy_drop"]) if misses else best
        variants = {"none (cross-entropy only)": ["finetune.distillation.logits=0", "finetune.distillation.membrane=0"],
                    "logits": ["finetune.distillation.membrane=0"],
                    "logits + membrane potentials (the default)": []}
        lines += ["", f"Distillation on {target['id']} ({target['memory_bytes']:,} bytes, "
                      f"{target['accuracy']:.2f} % untuned), {settings.epochs} epochs, seeds 0, 1 and 2:", "",
                  "| distillation | top-1 after, seed 0 | seed 1 | seed 2 | mean | seconds per run |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, overrides in variants.items():
            results, times = [], []
            for seed in (0, 1, 2):
                entry, seconds = tune(run, target["id"], overrides + [f"finetune.seed={seed}"])
                results.append(entry["accuracy"])
                times.append(seconds)
            lines.append(f"| {name} | " + " | ".join(f"{r:.2f}" for r in results) + f" | {sum(results) / 3:.2f} | "
                         f"{sum(times) / 3:.0f} |")
            print(lines[-1], flush=True)

        # Ray Train, 2 CPU workers (DDP on gloo, each half of every global batch) against one process
        lines += ["", f"Ray Train (TorchTrainer, DDP) on {target['id']}, same settings: 2 CPU workers of one "
                      "thread each against one process with the machine's threads. Wall time includes starting "
                      "Ray and each worker's model and data.", "",
                  "| training | top-1 after | wall seconds | speed-up |", "|---|---:|---:|---:|"]
        single, single_seconds = tune(run, target["id"])
        ray_run = folder / "ray-run"
        shutil.copytree(run, ray_run)
        two, two_seconds = tune(ray_run, target["id"], workers=2)
        lines.append(f"| 1 process | {single['accuracy']:.2f} | {single_seconds:.0f} | 1.00x |")
        lines.append(f"| Ray Train, 2 workers | {two['accuracy']:.2f} | {two_seconds:.0f} | "
                     f"{single_seconds / two_seconds:.2f}x |")
        per_epoch = [sum(h["seconds"] for h in e["history"]) / len(e["history"]) for e in (single, two)]
        lines += ["", f"Seconds per epoch (training and the progress validation): 1 process {per_epoch[0]:.1f}, "
                      f"2 workers {per_epoch[1]:.1f}."]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    publish("finetune", "Recovery fine-tuning", f"python experiments/bench/finetune.py --budget {args.budget} "
            "--write", "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
