"""Strategies at equal full-evaluation budgets, over seeds, against random and against
the plain Optuna loop a user would write instead (plain_optuna.py): best feasible
footprint and hypervolume at each budget.

    python experiments/bench/strategies.py [--budgets 20,40,80] [--seeds 0,1,2]
        [--data digits|fashion_mnist] [--only NAMES] [--keep DIR] [--no-prefix-check] [--partial] [--write]

``--keep DIR`` saves each finished run's figures in DIR and reuses them on the next
invocation: a long benchmark survives a kill, and invocations sharing DIR share the runs
(each takes the runs no live invocation holds). On 2 cores, two invocations with
``OMP_NUM_THREADS=1`` side by side, then one more that finds every run kept and writes the
tables. ``--only`` limits an invocation to some strategies (``plain``: both plain loops).

Budgets: a strategy that never reads the budget left (all but beam) does the same
first N full evaluations whatever the budget, so one run at the largest budget gives
every smaller one as its prefix (checked once: tpe at the middle budget against the
prefix of its run at the largest). Beam sizes its width by the budget left and runs
once per budget. Greedy, beam and prioritized draw no random numbers: one run stands
for every seed. Costs: probes are not free; "cost" is the run's wall time in units of
one full evaluation of the plain loop (its wall time per trial), measured in the same
run of this script.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _results import Keep, bench_spec, data_argument, publish, run_search, section
from plain_optuna import best_feasible, plain_optuna
from autocompress.searching import pareto_set, strategy_names, strategy_options

BUDGET_AWARE = {"beam"}
DETERMINISTIC = {"greedy", "beam", "prioritized"}
PLAIN = ("plain TPE", "plain NSGA-II")


def origin(run, fulls: list, best, warm: int | None) -> str:
    """Which full evaluation found ``best`` (#k), and for a warm-started sampler whether it was a seed."""
    if best is None:
        return "-"
    k = next(i for i, r in enumerate(fulls, start=1) if r.candidate_id == best.candidate_id)
    return f"#{k}" + ("" if warm is None else " warm start" if k <= warm else " sampler")


def prefix(run, budget: int, warm: int | None = None) -> dict:
    """What a run had after its first ``budget`` full evaluations."""
    fulls = run.fulls[:budget]
    until = run.at[len(fulls) - 1] if fulls else 0.0
    pareto = pareto_set(fulls, run.constraints)
    return {"best": pareto.best.memory_bytes if pareto.best else None, "hv": pareto.hypervolume,
            "fulls": len(fulls), "probes": sum(1 for t in run.probe_at if t <= until), "seconds": until,
            "from": origin(run, fulls, pareto.best, warm),
            "held": (run.held_out(pareto.best.candidate_id) if pareto.best and budget >= len(run.fulls) else None)}


def mean(values):
    found = [v for v in values if v is not None]
    return statistics.fmean(found) if len(found) == len(values) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="20,40,80")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default=None, help="comma-separated strategies (and 'plain') to run; the "
                        "tables are written only when every run is done or kept")
    parser.add_argument("--no-prefix-check", action="store_true", help="skip the tpe run at the middle budget "
                        "that checks a run's prefix stands for a smaller budget (one more search)")
    parser.add_argument("--partial", action="store_true", help="write the tables even with runs not done (kept by "
                        "no invocation): their cells say 'not run' and means are over the seeds that ran")
    parser.add_argument("--keep", type=Path, default=None, help="folder keeping each finished run's figures")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    data_argument(parser)
    args = parser.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    spec = bench_spec(args.data)
    top = budgets[-1]
    only = None if args.only is None else set(args.only.split(","))
    keep = Keep(args.keep, args.data)

    def kept(key: str, compute):
        """``compute()``'s JSON figures, from ``--keep`` when a previous invocation saved them; None
        when ``--only`` leaves this run to another invocation."""
        return keep(key, compute, mine=only is None or key.split("-")[0] in only)
    rows: dict[tuple[str, int, int], dict] = {}  # (strategy, seed, budget) -> prefix
    runs = {}  # (strategy, seed, budget) -> the run

    def run(name: str, seed: int, budget: int):
        start = time.perf_counter()
        outcome = run_search(spec, {"strategy": {"name": name, "seed": seed}, "budget.max_full_evaluations": budget})
        print(f"{name} seed {seed} budget {budget}: best {outcome.best.memory_bytes if outcome.best else None}, "
              f"{outcome.full_evaluations} full, {outcome.probes} probes, {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        return outcome

    def plain(label: str, sampler: str, seed: int) -> dict:
        start = time.perf_counter()
        trials = plain_optuna(spec, sampler, seed, top)
        seconds = time.perf_counter() - start
        print(f"{label} seed {seed}: {[best_feasible(trials[:b]) for b in budgets]}, {seconds:.0f} s",
              file=sys.stderr, flush=True)
        return {"per_trial": seconds / len(trials),
                "rows": {str(budget): {"best": best_feasible(trials[:budget]), "hv": None, "fulls": budget,
                                       "probes": 0, "seconds": seconds * budget / len(trials), "from": "-",
                                       "held": None} for budget in budgets}}

    def search(name: str, seed: int, budget: int) -> dict:
        outcome = run(name, seed, budget)
        warm = strategy_options(name)(name=name).warm_start if name in ("tpe", "nsga2") else None
        return {"fulls": [r.candidate_id for r in outcome.fulls],
                "rows": {str(cut): prefix(outcome, cut, warm) for cut in ([budget] if name in BUDGET_AWARE else budgets)}}

    plain_seconds, missing = [], []
    for label, sampler in zip(PLAIN, ("tpe", "nsga2")):
        for seed in seeds:
            figures = kept(f"plain-{sampler}-s{seed}-b{top}", lambda: plain(label, sampler, seed))
            if figures is None:
                missing.append(f"{label} seed {seed}")
                continue
            plain_seconds.append(figures["per_trial"])
            for budget in budgets:
                rows[(label, seed, budget)] = figures["rows"][str(budget)]

    for name in strategy_names():
        for seed in seeds[:1] if name in DETERMINISTIC else seeds:
            for budget in budgets if name in BUDGET_AWARE else [top]:
                figures = runs[(name, seed, budget)] = kept(f"{name}-s{seed}-b{budget}",
                                                             lambda: search(name, seed, budget))
                if figures is None:
                    missing.append(f"{name} seed {seed} budget {budget}")
                    continue
                for cut, row in figures["rows"].items():
                    for each in seeds if name in DETERMINISTIC else [seed]:
                        rows[(name, each, int(cut))] = row
    middle = budgets[(len(budgets) - 1) // 2]
    same = None
    if middle < top and not args.no_prefix_check:  # one budget alone has no prefix to check
        check = kept(f"tpe-s{seeds[0]}-b{middle}", lambda: search("tpe", seeds[0], middle))
        if check is None:
            missing.append(f"tpe seed {seeds[0]} budget {middle}")
        elif runs.get(("tpe", seeds[0], top)) is not None:
            same = check["fulls"] == runs[("tpe", seeds[0], top)]["fulls"][:middle]
    if missing:
        print(f"done; left to other invocations (--only): {', '.join(missing)}", file=sys.stderr)
        if not args.partial or not plain_seconds:
            return 0
    full_seconds = statistics.fmean(plain_seconds)

    names = list(PLAIN) + strategy_names()
    lines = [f"{spec.model.checkpoint} on {spec.data.dataset}, block granularity; constraints <= "
             f"{spec.constraints.accuracy.max_drop} "
             f"points, >= {spec.constraints.memory.min_saving:.0%} saved; seeds {', '.join(map(str, seeds))}. "
             "Best feasible bytes (smaller is better), mean over the seeds, and each seed's; \"none\" where a seed "
             "found no feasible point. Hypervolume: higher is better. Cost: wall time in units of one plain-loop "
             f"full evaluation ({full_seconds:.2f} s here), probes and overhead included.", ""]
    def ran(name: str, budget: int) -> list[dict]:
        return [rows[(name, s, budget)] for s in seeds if (name, s, budget) in rows]

    plain_means = {budget: {label: mean([c["best"] for c in ran(label, budget)]) if len(ran(label, budget)) == len(seeds)
                            else None for label in PLAIN} for budget in budgets}
    for budget in budgets:
        best_plain = min((v for v in plain_means[budget].values() if v is not None), default=None)
        lines += [f"**{budget} full evaluations**", "",
                  "| strategy | best feasible bytes, mean | per seed | from (per seed) | vs best plain loop | "
                  "hypervolume, mean | probes, mean | cost, mean |", "|---|---:|---|---|---:|---:|---:|---:|"]
        for name in names:
            every = [rows.get((name, s, budget)) for s in seeds]
            cells = [c for c in every if c is not None]
            if not cells:
                lines.append(f"| {name} | not run | | | | | | |")
                continue
            best = mean([c["best"] for c in cells])
            per_seed = " / ".join("not run" if c is None else f"{c['best']:,}" if c["best"] else "none" for c in every)
            ratio = f"{best_plain / best:.2f}x" if best and best_plain else "-"
            hv = f"{statistics.fmean(c['hv'] for c in cells):.4f}" if cells[0]["hv"] is not None else "-"
            label = name + (" (deterministic)" if name in DETERMINISTIC else "")
            if len(cells) < len(seeds):
                label += f" ({len(cells)} of {len(seeds)} seeds run)"
            origins = " / ".join("-" if c is None else c["from"] for c in every)
            lines.append(f"| {label} | {f'{best:,.0f}' if best else 'none'} | {per_seed} | {origins} | {ratio} | {hv} | "
                         f"{statistics.fmean(c['probes'] for c in cells):.0f} | "
                         f"{statistics.fmean(c['seconds'] for c in cells) / full_seconds:.0f} |")
        lines.append("")
    key = min(b for b in budgets if b >= 40) if any(b >= 40 for b in budgets) else top
    best_plain = min((v for v in plain_means[key].values() if v is not None), default=None)
    complete = [n for n in strategy_names() if len(ran(n, key)) == len(seeds)]
    beaten = [n for n in complete  # a plain loop with a seed that found nothing has no mean to beat
              if (m := mean([c["best"] for c in ran(n, key)])) is not None
              and (best_plain is None or m < best_plain)]
    plain_text = f"{best_plain:,.0f}" if best_plain is not None else "no plain loop found a feasible point on every seed"
    lines += [f"At {key} full evaluations, strategies whose mean best feasible bytes beat the better plain loop "
              f"({plain_text}): {len(beaten)} of {len(complete)} run on every seed ({', '.join(beaten)})"
              + (f"; not run on every seed: {', '.join(sorted(set(strategy_names()) - set(complete)))}."
                 if len(complete) < len(strategy_names()) else "."),
              ] + ([] if same is None else [
              f"tpe at {middle} full evaluations is the prefix of its run at {top}: {'yes' if same else 'NO'}."])
    held = [(n, s, rows[(n, s, top)]["held"]) for n in strategy_names() for s in seeds
            if (n, s, top) in rows and rows[(n, s, top)]["held"]]
    if held:
        lines += ["", f"Held out at {top} full evaluations (each run's best point measured once on the held-out "
                      "split): " + "; ".join(f"{n} seed {s} {h['accuracy_drop']:+.2f}" for n, s, h in held)]
    body = "\n".join(lines)
    name, title, command = section("strategies", "Strategies at equal budgets, against a plain Optuna loop", args.data)
    flags = (f" --budgets {args.budgets} --seeds {args.seeds}" + (" --no-prefix-check" if args.no_prefix_check else "")
             + (" --keep DIR --partial" if missing else ""))
    publish(name, title, command.replace(" --write", flags + " --write"),
            body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
