"""The papers' setups reproduced on a reference model at one budget: PrimeSVT-style
prune-only (within 3 points), AQ4SViT-style quantize-only (greedy and beam, within 1.5
points) and the joint search, best feasible bytes each, with the compression defaults.
With a held-out split (Fashion-MNIST) each best point's held-out drop is shown beside
the selection one.

    python experiments/bench/reproductions.py [--budget 40] [--data digits|fashion_mnist]
        [--only joint,quantize,...] [--write]

``--only`` runs some of the setups (keys: joint, quantize, quantize-beam, primesvt,
primesvt-keep, prune-greedy-l2, prune-greedy-vbp); the table then says which were not run.
"""

from __future__ import annotations

import sys

from _results import bench_spec, budget_arguments, publish, run_search, section

KEYS = ("joint", "quantize", "quantize-beam", "primesvt", "primesvt-keep", "prune-greedy-l2", "prune-greedy-vbp")
RUNS = [
    ("joint, greedy (ours)", {"space.search": "joint"}),
    ("quantize-only, greedy (AQ4SViT)", {"space.search": "quantize"}),
    ("quantize-only, beam 4 (AQ4SViT-Beam)", {"space.search": "quantize", "strategy": {"name": "beam", "seed": 0}}),
    ("prune-only, prioritized, L2 importance, 3 points, layer granularity (PrimeSVT)",
     {"space.search": "prune", "space.granularity": "layer",
      "strategy": {"name": "prioritized", "seed": 0, "keep_compressing": False},
      "constraints.accuracy.max_drop": 3.0, "constraints.memory.min_saving": 0.3, "compression.importance": "l2"}),
    ("prune-only, prioritized, keep_compressing, L2 importance, 3 points, layer granularity",
     {"space.search": "prune", "space.granularity": "layer",
      "strategy": {"name": "prioritized", "seed": 0, "keep_compressing": True},
      "constraints.accuracy.max_drop": 3.0, "constraints.memory.min_saving": 0.3, "compression.importance": "l2"}),
    ("prune-only, greedy, L2 importance, 3 points, layer granularity",
     {"space.search": "prune", "space.granularity": "layer", "constraints.accuracy.max_drop": 3.0,
      "constraints.memory.min_saving": 0.3, "compression.importance": "l2"}),
    ("prune-only, greedy, VBP importance (the default), 3 points, layer granularity",
     {"space.search": "prune", "space.granularity": "layer", "constraints.accuracy.max_drop": 3.0,
      "constraints.memory.min_saving": 0.3}),
]


def main() -> int:
    args = budget_arguments(__doc__, only=KEYS)
    spec = bench_spec(args.data)
    rows, best, first = [], {}, None
    for key, (label, overrides) in zip(KEYS, RUNS, strict=True):
        if key not in args.only:
            best[label] = None
            rows.append(f"| {label} | not run (`--only`) | | |{' |' if spec.data.validation.holdout else ''} |")
            continue
        run = run_search(spec, {**overrides, "budget.max_full_evaluations": args.budget})
        first = first or run
        point = run.best
        best[label] = point
        held = run.held_out(point.candidate_id) if point else None
        held_cell = "" if held is None else f" {held['accuracy']:.2f} / {held['accuracy_drop']:+.2f} |"
        rows.append(f"| {label} | {point.memory_bytes:,} | {point.memory_saving:.1%} | {point.accuracy:.2f} / "
                    f"{point.accuracy_drop:+.2f} |{held_cell} {run.full_evaluations} |" if point else
                    f"| {label} | none | - | - |{' - |' if run.document.get('holdout') else ''} "
                    f"{run.full_evaluations} |")
        print(rows[-1], file=sys.stderr, flush=True)
    held_header = " held-out top-1 % / drop |" if first.document.get("holdout") else ""
    lines = [f"{spec.model.checkpoint} on {spec.data.dataset}: {first.baseline_line()}; at most {args.budget} full "
             "evaluations, seed 0, the spec's compression defaults (BatchNorm folded, MSE clipping, BatchNorm "
             "statistics recalibrated, VBP pruning importance unless the row says L2):", "",
             f"| setup | best feasible bytes | saved | top-1 % / drop |{held_header} full evaluations |",
             "|---|---:|---:|---:|" + ("---:|" if held_header else "") + "---:|", *rows]
    joint, quantize = best[RUNS[0][0]], best[RUNS[1][0]]
    if joint and quantize:
        lines += ["", f"joint / quantize-only (greedy) best feasible bytes: {joint.memory_bytes / quantize.memory_bytes:.2f}x"]
    prune = [p for label, p in best.items() if label.startswith("prune-only") and p]
    if prune:
        lines.append(f"prune-only within 3 points: best {max(p.memory_saving for p in prune):.1%} saved")
    name, title, command = section("reproductions", "The papers' setups at one budget", args.data)
    if set(args.only) != set(KEYS):
        command = command.replace(" --write", f" --only {','.join(args.only)} --write")
    publish(name, title, command, "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
