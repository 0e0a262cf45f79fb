"""The papers' setups reproduced on a reference model at one budget: PrimeSVT-style
prune-only (within 3 points), AQ4SViT-style quantize-only (greedy and beam, within 1.5
points) and the joint search, best feasible bytes each, with the compression defaults.
With a held-out split (Fashion-MNIST) each best point's held-out drop is shown beside
the selection one.

    python experiments/bench/reproductions.py [--budget 40] [--data digits|fashion_mnist]
        [--only joint,quantize,...] [--keep DIR] [--write]

``--only`` runs some of the setups (keys: joint, quantize, quantize-beam, primesvt,
primesvt-keep, prune-greedy-l2, prune-greedy-vbp); the table then says which were not run.
``--keep DIR`` saves each setup's figures in DIR: a later invocation with another ``--only``
and the same DIR shows them beside its own, so the setups can run at different times.
"""

from __future__ import annotations

import sys

from _results import Keep, bench_spec, budget_arguments, publish, run_search, section

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
    args = budget_arguments(__doc__, only=KEYS, keep=True)
    spec = bench_spec(args.data)
    keep = Keep(args.keep, args.data)
    held_out = bool(spec.data.validation.holdout)
    rows, best, baseline = [], {}, None

    def setup(label: str, overrides: dict) -> dict:
        """One setup's search, as the figures its row and the ratios below need."""
        run = run_search(spec, {**overrides, "budget.max_full_evaluations": args.budget})
        point = run.best
        held = run.held_out(point.candidate_id) if point else None
        held_cell = "" if held is None else f" {held['accuracy']:.2f} / {held['accuracy_drop']:+.2f} |"
        row = (f"| {label} | {point.memory_bytes:,} | {point.memory_saving:.1%} | {point.accuracy:.2f} / "
               f"{point.accuracy_drop:+.2f} |{held_cell} {run.full_evaluations} |" if point else
               f"| {label} | none | - | - |{' - |' if held_out else ''} {run.full_evaluations} |")
        return {"row": row, "baseline": run.baseline_line(),
                "best": None if point is None else {"memory_bytes": point.memory_bytes,
                                                    "memory_saving": point.memory_saving}}

    for key, (label, overrides) in zip(KEYS, RUNS, strict=True):
        figures = keep(f"reproductions-b{args.budget}-{key}", lambda: setup(label, overrides), mine=key in args.only)
        if figures is None:
            best[label] = None
            rows.append(f"| {label} | not run (`--only`) | | |{' |' if held_out else ''} |")
            continue
        best[label], baseline = figures["best"], baseline or figures["baseline"]
        rows.append(figures["row"])
        print(rows[-1], file=sys.stderr, flush=True)
    held_header = " held-out top-1 % / drop |" if held_out else ""
    lines = [f"{spec.model.checkpoint} on {spec.data.dataset}: {baseline or 'no setup run'}; at most {args.budget} full "
             "evaluations, seed 0, the spec's compression defaults (BatchNorm folded, MSE clipping, BatchNorm "
             "statistics recalibrated, VBP pruning importance unless the row says L2):", "",
             f"| setup | best feasible bytes | saved | top-1 % / drop |{held_header} full evaluations |",
             "|---|---:|---:|---:|" + ("---:|" if held_header else "") + "---:|", *rows]
    joint, quantize = best[RUNS[0][0]], best[RUNS[1][0]]
    if joint and quantize:
        lines += ["", "joint / quantize-only (greedy) best feasible bytes: "
                  f"{joint['memory_bytes'] / quantize['memory_bytes']:.2f}x"]
    prune = [p for label, p in best.items() if label.startswith("prune-only") and p]
    if prune:
        lines.append(f"prune-only within 3 points: best {max(p['memory_saving'] for p in prune):.1%} saved")
    name, title, command = section("reproductions", "The papers' setups at one budget", args.data)
    if set(args.only) != set(KEYS):
        command = command.replace(" --write", f" --only {','.join(args.only)} --write")
    if args.keep:
        command = command.replace(" --write", " --keep DIR --write")
    publish(name, title, command, "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
