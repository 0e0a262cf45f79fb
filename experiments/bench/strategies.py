"""Strategies at an equal full-evaluation budget: hypervolume and best feasible
footprint of every strategy, side by side with random sampling from the same run.

    python experiments/bench/strategies.py [--budget 40] [--granularity block] [--seed 0] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time

from _results import DIGITS_SPEC, publish, run_search
from autocompress.search import strategy_names
from autocompress.spec import load_spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--granularity", default="block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    spec = load_spec(DIGITS_SPEC)
    spec.space.granularity = args.granularity
    rows = {}
    for name in strategy_names():
        start = time.perf_counter()
        outcome = run_search(spec, {"strategy": {"name": name, "seed": args.seed},
                                    "budget.max_full_evaluations": args.budget})
        rows[name] = (outcome, time.perf_counter() - start)
        best = outcome.pareto.best
        print(f"{name}: hypervolume {outcome.pareto.hypervolume:.4f}, best "
              f"{best.memory_bytes if best else None}, {outcome.full_evaluations} full", file=sys.stderr)
    random_outcome = rows["random"][0]
    random_best = random_outcome.pareto.best
    lines = [f"Digits reference model, {args.granularity} granularity, budget {args.budget} full evaluations each, "
             f"seed {args.seed}; constraints <= {spec.constraints.accuracy.max_drop} points, >= "
             f"{spec.constraints.memory.min_saving:.0%} saved. Ratios against random from the same run (hypervolume: "
             "higher is better; footprint: random's bytes / the strategy's, higher is better).", "",
             "| strategy | full evaluations used | hypervolume | vs random | best feasible bytes (saved, top-1) | "
             "vs random | wall s |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, (outcome, seconds) in rows.items():
        best = outcome.pareto.best
        hv_ratio = outcome.pareto.hypervolume / random_outcome.pareto.hypervolume
        size_ratio = (f"{random_best.memory_bytes / best.memory_bytes:.2f}x" if best and random_best else "-")
        lines.append(
            f"| {name} | {outcome.full_evaluations} | {outcome.pareto.hypervolume:.4f} | {hv_ratio:.2f}x | "
            + (f"{best.memory_bytes:,} ({best.memory_saving:.1%}, {best.accuracy:.2f} %)" if best else "none")
            + f" | {size_ratio} | {seconds:.1f} |")
    body = "\n".join(lines)
    publish("strategies", "Strategies at equal budgets",
                      f"python experiments/bench/strategies.py --budget {args.budget} --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
