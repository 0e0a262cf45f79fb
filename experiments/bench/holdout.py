"""How optimistic is the accuracy a search reports on the images it chose on? The
joint greedy search (the digits demo's, or Fashion-MNIST's) with half of the validation
set held out (data.validation.holdout 0.5), over three seeds of the split: each feasible Pareto point's drop on the selection
split (what the search decided on) against its drop on the held-out half (measured once,
after the search).

    python experiments/bench/holdout.py [--budget 40] [--data digits|fashion_mnist] [--write]
"""

from __future__ import annotations

import sys

from _results import bench_spec, budget_arguments, publish, run_search, section

SEEDS = (0, 1, 2)


def main() -> int:
    args = budget_arguments(__doc__)
    spec = bench_spec(args.data)
    limit = spec.constraints.accuracy.max_drop
    lines = [f"{spec.model.checkpoint} on {spec.data.dataset}, greedy at block granularity, at most {args.budget} "
             f"full evaluations, {limit:g} points allowed; half of the validation images held out "
             "(`data.validation.holdout: 0.5`, seeds below). "
             "Drops in top-1 points against the baseline on the same split.", "",
             "| split seed | baseline selection / held out | best point | bytes | drop, selection | drop, held out "
             "| feasible held out | feasible points feasible held out |",
             "|---:|---|---|---:|---:|---:|---|---:|"]
    gaps = []
    kept = total = 0
    for seed in SEEDS:
        run = run_search(spec, {"data.validation.holdout": 0.5, "data.validation.holdout_seed": seed,
                                "budget.max_full_evaluations": args.budget})
        doc = run.document
        feasible = [p for p in doc["points"] if p["feasible"] and p["holdout"] is not None]
        gaps += [p["holdout"]["accuracy_drop"] - p["accuracy_drop"] for p in feasible]
        kept += sum(p["holdout"]["feasible"] for p in feasible)
        total += len(feasible)
        best = next((p for p in doc["points"] if p["id"] == doc["best"]), None)
        row = (f"| {seed} | {doc['baseline']['accuracy']:.2f} / {doc['holdout']['baseline_accuracy']:.2f} | "
               + ("none | - | - | - | - " if best is None else
                  f"{best['id']} | {best['memory_bytes']:,} | {best['accuracy_drop']:+.2f} | "
                  f"{best['holdout']['accuracy_drop']:+.2f} | {'yes' if best['holdout']['feasible'] else 'no'} ")
               + f"| {sum(p['holdout']['feasible'] for p in feasible)} of {len(feasible)} |")
        lines.append(row)
        print(row, file=sys.stderr)
    if gaps:
        lines += ["", f"Held-out drop minus selection drop over the {len(gaps)} feasible Pareto points: mean "
                      f"{sum(gaps) / len(gaps):+.2f} points, largest {max(gaps):+.2f}; {kept} of {total} stay within "
                      f"{limit:g} points on the held-out images. The selection figure is what a run without a "
                      "held-out split reports."]
    name, title, command = section("holdout", "Selection split against a held-out split", args.data)
    publish(name, title, command, "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
