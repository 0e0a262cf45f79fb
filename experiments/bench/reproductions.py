"""The papers' setups reproduced on the digits reference at one budget: PrimeSVT-style
prune-only (within 3 points), AQ4SViT-style quantize-only (greedy and beam, within 1.5
points) and the joint search, best feasible bytes each, with the compression defaults.

    python experiments/bench/reproductions.py [--budget 40] [--write]
"""

from __future__ import annotations

import sys

from _results import DIGITS_SPEC, budget_arguments, publish, run_search
from autocompress.spec import load_spec

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
    args = budget_arguments(__doc__)
    spec = load_spec(DIGITS_SPEC)
    lines = [f"Digits reference (99.44 %, 661,808 bytes), at most {args.budget} full evaluations, seed 0, the spec's "
             "compression defaults (BatchNorm folded, MSE clipping, BatchNorm statistics recalibrated, VBP pruning "
             "importance unless the row says L2):", "",
             "| setup | best feasible bytes | saved | top-1 % | full evaluations |", "|---|---:|---:|---:|---:|"]
    best = {}
    for label, overrides in RUNS:
        run = run_search(spec, {**overrides, "budget.max_full_evaluations": args.budget})
        point = run.best
        best[label] = point
        lines.append(f"| {label} | {point.memory_bytes:,} | {point.memory_saving:.1%} | {point.accuracy:.2f} | "
                     f"{run.full_evaluations} |" if point else f"| {label} | none | - | - | {run.full_evaluations} |")
        print(lines[-1], file=sys.stderr)
    joint, quantize = best[RUNS[0][0]], best[RUNS[1][0]]
    if joint and quantize:
        lines += ["", f"joint / quantize-only (greedy) best feasible bytes: {joint.memory_bytes / quantize.memory_bytes:.2f}x"]
    prune = [p for label, p in best.items() if label.startswith("prune-only") and p]
    if prune:
        lines.append(f"prune-only within 3 points: best {max(p.memory_saving for p in prune):.1%} saved")
    publish("reproductions", "The papers' setups at one budget", "python experiments/bench/reproductions.py --write",
            "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
