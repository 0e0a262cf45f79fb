"""The promise on fresh images: how often the recommended point breaks the accuracy limit
on images the search did not choose on, and what keeping the promise costs in bytes.

Each search holds half of the validation set out (``data.validation.holdout: 0.5``) over
three seeds of the split, at block granularity and one full-evaluation budget, with a
strategy and one of two rules:

- ``before``: feasibility decided on the measured drop (``constraints.accuracy.confidence:
  null``) and the best feasible point on the selection images recommended (pareto.json's
  ``best_selection``): what every run recommended before the confidence rule;
- ``after``: the defaults (the drop's upper confidence bound at 0.95 decides feasibility,
  and the fixed-sequence test on the held-out images chooses the point: pareto.json's
  ``best``).

For each run: the recommended point, its bytes and saving, its drop on the selection
and the held-out images, and whether it breaks the limit held out; for the ``before``
runs also the optimism of every selection-feasible Pareto point (held-out drop minus
selection drop).

    python experiments/bench/holdout.py [--budget 40] [--data digits|fashion_mnist]
        [--only greedy-before,greedy-after,tpe-before,tpe-after] [--keep DIR] [--write]
"""

from __future__ import annotations

import sys

from _results import Keep, bench_spec, budget_arguments, publish, run_search, section

SEEDS = (0, 1, 2)
STRATEGIES = ("greedy", "tpe")
RULES = {"before": {"constraints.accuracy.confidence": None}, "after": {}}
KEYS = tuple(f"{strategy}-{rule}" for strategy in STRATEGIES for rule in RULES)


def figures(document: dict, rule: str) -> dict:
    """What one run recommends and how its points fare held out."""
    chosen = document["best_selection"] if rule == "before" else document["best"]
    point = next((p for p in document["points"] if p["id"] == chosen), None)
    feasible = [p for p in document["points"] if p["feasible"] and p["holdout"] is not None]
    return {
        "baselines": [document["baseline"]["accuracy"], document["holdout"]["baseline_accuracy"]],
        "point": None if point is None else {
            "id": point["id"], "bytes": point["memory_bytes"], "saving": point["memory_saving"],
            "selection": point["accuracy_drop"], "held": point["holdout"]["accuracy_drop"],
            "upper": point["holdout"].get("drop_upper")},
        "nearest": (document["holdout"].get("nearest") or {}).get("id"),
        # no point certified: where the measured held-out drop alone would stop (not a promise)
        "measured_only": None if not document["holdout"].get("measured_only") else {
            "id": document["holdout"]["measured_only"]["id"],
            "held": document["holdout"]["measured_only"]["accuracy_drop"],
            "saving": next(p["memory_saving"] for p in document["points"]
                           if p["id"] == document["holdout"]["measured_only"]["id"])},
        "gaps": [p["holdout"]["accuracy_drop"] - p["accuracy_drop"] for p in feasible],
        "full_evaluations": document["statistics"]["full_evaluations"],
    }


def _weak(found: dict) -> str:
    """A run with no certified point: where the measured held-out drop alone stops."""
    weak = found.get("measured_only")
    return "" if not weak else (f"; on the measured drop alone {weak['id']}, {weak['saving']:.1%} saved, "
                                f"{weak['held']:+.2f} held out, not certified")


def main() -> int:
    args = budget_arguments(__doc__, only=KEYS, keep=True)
    spec = bench_spec(args.data)
    limit = spec.constraints.accuracy.max_drop
    keep = Keep(args.keep, args.data)
    lines = [f"{spec.model.checkpoint} on {spec.data.dataset}, block granularity, at most {args.budget} full "
             f"evaluations, {limit:g} points allowed, half of the validation images held out (split seeds "
             f"{', '.join(map(str, SEEDS))}). `before`: feasible by the measured drop, the best feasible point on the "
             "selection images recommended; `after`: feasible by the drop's upper bound at 0.95, the point the "
             "held-out test chooses. Drops in top-1 points against the baseline on the same split.", "",
             "| strategy | rule | split seed | recommended | bytes | saved | drop, selection | drop, held out "
             "| breaks the limit held out |", "|---|---|---:|---|---:|---:|---:|---:|---|"]
    summary, runs = [], {}
    for strategy in STRATEGIES:
        for rule, overrides in RULES.items():
            key = f"{strategy}-{rule}"
            for seed in SEEDS:
                def compute(strategy=strategy, rule=rule, overrides=overrides, seed=seed):
                    run = run_search(spec, {"data.validation.holdout": 0.5, "data.validation.holdout_seed": seed,
                                            "strategy": {"name": strategy, "seed": 0},
                                            "budget.max_full_evaluations": args.budget, **overrides})
                    return figures(run.document, rule)

                found = keep(f"holdout-b{args.budget}-{key}-s{seed}", compute, mine=key in args.only)
                runs[(strategy, rule, seed)] = found
                if found is None:
                    lines.append(f"| {strategy} | {rule} | {seed} | not run | | | | | |")
                    continue
                point = found["point"]
                lines.append(
                    f"| {strategy} | {rule} | {seed} | " + (
                        ("none (no selection-feasible point) " if found["nearest"] is None else
                         f"none (nearest {found['nearest']}{_weak(found)}) ") + "| - | - | - | - | no point |"
                        if point is None else
                        f"{point['id']} | {point['bytes']:,} | {point['saving']:.1%} | {point['selection']:+.2f} | "
                        f"{point['held']:+.2f} | {'**yes**' if point['held'] > limit + 1e-9 else 'no'} |"))
                print(lines[-1], file=sys.stderr, flush=True)
            done = [runs[(strategy, rule, s)] for s in SEEDS if runs[(strategy, rule, s)] is not None]
            if done:
                points = [r["point"] for r in done if r["point"] is not None]
                breaks = sum(p["held"] > limit + 1e-9 for p in points)
                saving = (f"mean {sum(p['saving'] for p in points) / len(points):.1%} saved" if points else
                          "no point recommended")
                summary.append(f"- {strategy}, {rule}: the recommended point breaks the limit held out in {breaks} of "
                               f"{len(done)} runs ({len(done) - len(points)} recommend none); {saving}")
        costs = []
        for seed in SEEDS:
            before, after = runs.get((strategy, "before", seed)), runs.get((strategy, "after", seed))
            if before and after and before["point"] and after["point"]:
                costs.append(100 * (before["point"]["saving"] - after["point"]["saving"]))
        if costs:
            summary.append(f"- {strategy}: the promise costs {sum(costs) / len(costs):.2f} points of memory saving "
                           f"on average (largest {max(costs):.2f}) against the selection-feasible best of `before`")
    gaps = [g for (_, rule, _), r in runs.items() if r and rule == "before" for g in r["gaps"]]
    if gaps:
        summary.append(f"- `before`: held-out drop minus selection drop over its {len(gaps)} selection-feasible "
                       f"Pareto points: mean {sum(gaps) / len(gaps):+.2f} points, largest {max(gaps):+.2f}")
    lines += ["", *summary]
    name, title, command = section("holdout", "The promise on held-out images", args.data)
    if any(found is None for found in runs.values()):  # a subset: say which (every run kept: the whole command)
        command = command.replace(" --write", f" --only {','.join(args.only)} --write")
    publish(name, title, command.replace(" --write", f" --budget {args.budget} --write"), "\n".join(lines),
            write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
