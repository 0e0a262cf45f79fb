"""Gate on vs off: full evaluations and wall time to the best feasible point.

The same strategy runs with and without the drift proxy and gate. With the gate, a
walk (greedy, beam) ranks each step's neighbours by their drift (one calibration
forward each) and fully evaluates only the moves it picks, and the gate skips those
whose drift is too high. Without it, every neighbour is fully evaluated and ranked by
its measured accuracy drop. Both runs go to completion (the strategy stops by itself)
on the digits reference model at block granularity. Printed side by side from one
run: the best feasible point of each, the full evaluations and the wall time it took
to first reach gate-off's best point, and the ratios.

    python experiments/bench/gate.py [--strategies greedy beam] [--granularity block] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time

from _results import DIGITS_SPEC, publish, run_search
from autocompress.spec import load_spec

BUDGET = 2000  # high enough that every run ends by itself


def run(spec, strategy: str, proxy: bool):
    start = time.perf_counter()
    outcome = run_search(spec, {"strategy": {"name": strategy, "seed": 0}, "proxy.enabled": proxy,
                                "budget.max_full_evaluations": BUDGET})
    return outcome, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["greedy", "beam"])
    parser.add_argument("--granularity", default="block")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    spec = load_spec(DIGITS_SPEC)
    spec.space.granularity = args.granularity
    lines = ["| strategy | gate | best feasible: bytes, saving, top-1 | full evaluations to gate-off's best | "
             "wall s to it | full evaluations in all | proxy evaluations | wall s in all |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    ratios = []
    for strategy in args.strategies:
        runs = {proxy: run(spec, strategy, proxy) for proxy in (True, False)}
        off_best = runs[False][0].best
        for proxy, (outcome, seconds) in runs.items():
            best = outcome.best
            count, to_seconds = outcome.reach(off_best.memory_bytes) if off_best else (None, None)
            lines.append(
                f"| {strategy} | {'on' if proxy else 'off'} | "
                + (f"{best.memory_bytes:,}, {best.memory_saving:.1%}, {best.accuracy:.2f} %" if best else "none")
                + f" | {count or 'never'} | {'-' if to_seconds is None else f'{to_seconds:.1f}'} | "
                f"{outcome.full_evaluations} | {outcome.probes} | {seconds:.1f} |")
            print(lines[-1], file=sys.stderr)
        on_count, on_seconds = runs[True][0].reach(off_best.memory_bytes) if off_best else (None, None)
        off_count, off_seconds = runs[False][0].reach(off_best.memory_bytes) if off_best else (None, None)
        if on_count is None or off_count is None:
            ratios.append(f"- {strategy}: with the gate the search never reached gate-off's best point")
            continue
        ratios.append(f"- {strategy}: to gate-off's best point ({off_best.memory_bytes:,} bytes) the gate needs "
                      f"{off_count / on_count:.1f}x fewer full evaluations ({on_count} vs {off_count}) and "
                      f"{off_seconds / on_seconds:.1f}x less wall time ({on_seconds:.1f} s vs {off_seconds:.1f} s)")
    header = (f"Digits reference model, {args.granularity} granularity, constraints <= "
              f"{spec.constraints.accuracy.max_drop} points, >= {spec.constraints.memory.min_saving:.0%} saved; "
              "both runs of a strategy go until the strategy stops by itself.")
    body = "\n".join([header, "", *lines, "", *ratios])
    publish("gate", "Gate on vs off", "python experiments/bench/gate.py --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
