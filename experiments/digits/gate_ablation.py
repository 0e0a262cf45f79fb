"""Gate on vs off: the same strategy with and without the drift proxy and gate.

With the gate, a walk (greedy, beam) ranks each step's neighbours by their drift (one
calibration forward each) and fully evaluates only the moves it picks, and the gate
skips those whose drift is too high. Without it, every neighbour is fully evaluated
and ranked by its measured accuracy drop. Both runs go to completion (the strategy
stops by itself) on the digits reference model at block granularity; the script prints
each run's best feasible point and how many full evaluations it took to reach it, and
the ratio of those counts.

    python experiments/digits/gate_ablation.py [--strategies greedy beam] [--granularity block]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pydantic import TypeAdapter

from autocompress.engine import Session
from autocompress.engine.search import run_search
from autocompress.spec import StrategySpec, load_spec

HERE = Path(__file__).resolve().parent
BUDGET = 2000  # high enough that every run ends by itself


def run(spec, strategy: str, proxy: bool):
    options = TypeAdapter(StrategySpec).validate_python({"name": strategy, "seed": 0})
    start = time.perf_counter()
    outcome = run_search(Session.open(spec, say=lambda _m: None), strategy_options=options, proxy=proxy,
                         max_full_evaluations=BUDGET, say=lambda _m: None)
    return outcome, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["greedy", "beam"])
    parser.add_argument("--granularity", default="block")
    args = parser.parse_args()
    spec = load_spec(HERE / "spec.yaml")
    spec.space.granularity = args.granularity
    lines = ["| strategy | gate | best feasible: saving, top-1 | full evaluations to it | full evaluations in all | proxy evaluations | wall s |",
             "|---|---|---|---:|---:|---:|---:|"]
    ratios = []
    for strategy in args.strategies:
        runs = {}
        for proxy in (True, False):
            outcome, seconds = run(spec, strategy, proxy)
            runs[proxy] = outcome
            best = outcome.pareto.best
            to_best = outcome.full_evaluations_to(best.memory_bytes) if best else None
            lines.append(
                f"| {strategy} | {'on' if proxy else 'off'} | "
                + (f"{best.memory_saving:.1%}, {best.accuracy:.2f} %" if best else "none")
                + f" | {to_best if to_best else '-'} | {outcome.stats.full_evaluations} | {outcome.stats.probes} | {seconds:.0f} |"
            )
            print(lines[-1], file=sys.stderr)
        on, off = runs[True].pareto.best, runs[False].pareto.best
        if on is None or off is None:
            ratios.append(f"{strategy}: no comparison (a run found no feasible point)")
            continue
        off_to_best = runs[False].full_evaluations_to(off.memory_bytes)
        on_to_match = runs[True].full_evaluations_to(off.memory_bytes)
        as_small = on.memory_bytes <= off.memory_bytes
        ratios.append(
            f"{strategy}: gate on reaches a feasible point {'at least as small as' if as_small else 'LARGER than'} "
            f"gate off's best ({on.memory_bytes:,} vs {off.memory_bytes:,} bytes); full evaluations to reach gate "
            f"off's best: {on_to_match} with the gate, {off_to_best} without: ratio "
            + (f"{off_to_best / on_to_match:.1f}x" if on_to_match else "n/a (never reached)")
            + f"; in all {runs[True].stats.full_evaluations} vs {runs[False].stats.full_evaluations} "
            f"({runs[False].stats.full_evaluations / runs[True].stats.full_evaluations:.1f}x)"
        )
    print(f"digits reference model, {args.granularity} granularity, constraints: <= "
          f"{spec.constraints.accuracy.max_drop} points, >= {spec.constraints.memory.min_saving:.0%} saved\n")
    print("\n".join(lines))
    print()
    print("\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
