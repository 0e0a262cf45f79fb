"""Early stopping of full validation: images read per gated-through candidate and wall
time with and without it, on the digits demo (the real driver) and on a synthetic
ImageNet-sized case, with the Pareto set's feasible points compared; and the rate of
wrong stops at ImageNet scale.

    python experiments/bench/early_stopping.py [--trials 1000] [--data digits|fashion_mnist] [--write]

- Digits: the demo spec through ``start_search`` (360 validation images in 3 shards
  of 128), as shipped (the gate lets few bad candidates through) and without the proxy
  (every probe is a full validation, so collapsed candidates are validated too).
- Fashion-MNIST (``--data fashion_mnist``): the joint spec (5,000 selection images in
  20 shards of 250, half of the test set held out) the same two ways, the proxy-off run
  at 60 full validations; the synthetic rows and the wrong stops are left to the digits
  section (they do not depend on the data).
- Synthetic: 50,000 images in 98 shards of 512, the conformance landscape image by image
  (:class:`autocompress.searching.conformance.PerImageEvaluator`: a baseline at 90 %, each
  candidate's errors a seeded set with 6 % discordant images), random and NSGA-II
  proposals (which validate collapsed candidates) and greedy; modelled GPU time at 350
  images/s.
- Wrong stops: candidates exactly at the accuracy limit on 50,000 images (98 looks, the
  default confidence 0.999): how often one is stopped (it never should be).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from _results import bench_spec, data_argument, publish, run_search, section
from autocompress.searching import Constraints, LocalExecutor, drive
from autocompress.searching.conformance import BASELINE_BYTES, PerImageEvaluator, make_loop
from autocompress.searching.early import EarlyStopping, shard_bounds

RATE = 350.0  # images/s: Spikformer-8-512, FP32, one A100 (experiments/bench/cluster_scaling.py)


def feasible_points(points) -> list[tuple]:
    return [(p.candidate_id, round(p.accuracy, 9), p.memory_bytes) for p in points if p.feasible]


def front_differs_only_by_stopped(off_points, on_points, on_results) -> bool:
    """The Pareto sets differ only where a candidate stopped early (infeasible, never a
    point) was a point without early stopping, and the points they share are the same."""
    stopped = {r.candidate_id for r in on_results if r.early_stopped}
    off = {p.candidate_id: p.accuracy for p in off_points}
    on = {p.candidate_id: p.accuracy for p in on_points}
    exact_off = {r.candidate_id: r.accuracy for r in on_results if r.exact}
    return set(off) - set(on) <= stopped and all(exact_off.get(c) == a for c, a in on.items())


def real_rows(spec, case: str, proxy_off_budget: int) -> list[dict]:
    rows = []
    for label, overrides in ((f"{case} (gate on)", {}),
                             (f"{case}, proxy off (every probe a full validation), budget {proxy_off_budget}",
                              {"proxy.enabled": False, "budget.max_full_evaluations": proxy_off_budget})):
        runs = {}
        for early in (False, True):
            start = time.perf_counter()
            run = run_search(spec, {**overrides, "evaluation.early_stopping": early})
            runs[early] = (run, time.perf_counter() - start)
        (off, off_s), (on, on_s) = runs[False], runs[True]
        read_off = sum(r.images for r in off.fulls)
        read_on = sum(r.images for r in on.fulls)
        rows.append({
            "case": label, "full": (off.full_evaluations, on.full_evaluations),
            "stopped": sum(r.early_stopped for r in on.fulls),
            "per_candidate": (read_off / max(1, len(off.fulls)), read_on / max(1, len(on.fulls))),
            "saved": 1 - read_on / read_off, "wall": (off_s, on_s),
            "identical": feasible_points(off.pareto.points) == feasible_points(on.pareto.points),
            "points": len(feasible_points(on.pareto.points)),
            "same_path": [r.candidate_id for r in off.fulls] == [r.candidate_id for r in on.fulls],
            "same_pareto": [(p.candidate_id, p.accuracy) for p in off.pareto.points]
            == [(p.candidate_id, p.accuracy) for p in on.pareto.points],
            "only_stopped": front_differs_only_by_stopped(off.pareto.points, on.pareto.points, on.fulls),
        })
        print(rows[-1], file=sys.stderr)
    return rows


def synthetic_rows() -> list[dict]:
    rows = []
    for name in ("random", "nsga2", "greedy"):
        runs = {}
        for early in (False, True):
            evaluator = PerImageEvaluator(images=50_000)
            constraints = Constraints(evaluator.base_accuracy, BASELINE_BYTES, 1.5, 0.25)
            stopping = evaluator.early_stopping(512)
            loop = make_loop(name, max_full=40, constraints=constraints, shards=stopping.shards,
                             early_stopping=stopping if early else None)
            drive(loop, LocalExecutor(evaluator))
            runs[early] = (loop, evaluator)
        (off, off_ev), (on, on_ev) = runs[False], runs[True]
        from autocompress.searching import pareto_set

        off_points = pareto_set(off.all_results(), off.constraints).points
        on_points = pareto_set(on.all_results(), on.constraints).points
        same = feasible_points(off_points) == feasible_points(on_points)
        rows.append({
            "case": f"synthetic, 50,000 images, {name}", "full": (off.stats.full_evaluations, on.stats.full_evaluations),
            "stopped": on.stats.early_stopped,
            "per_candidate": (off_ev.images_read / max(1, off.stats.full_evaluations),
                              on_ev.images_read / max(1, on.stats.full_evaluations)),
            "saved": 1 - on_ev.images_read / off_ev.images_read,
            "wall": (off_ev.images_read / RATE, on_ev.images_read / RATE), "modelled": True,
            "identical": same, "points": len(feasible_points(on_points)),
            "same_path": off.full_order == on.full_order,
            "same_pareto": [(r.candidate_id, r.accuracy) for r in off_points] == [(r.candidate_id, r.accuracy)
                                                                                  for r in on_points],
            "only_stopped": front_differs_only_by_stopped(off_points, on_points, on.all_results()),
        })
        print(rows[-1], file=sys.stderr)
    return rows


def wrong_stops(trials: int, drop: float, seed: int = 0) -> tuple[int, float]:
    """(stops, mean images read before the stop or the end) for candidates ``drop`` points
    worse than a 73 % baseline on 50,000 images, 10 % discordant, 98 looks at 0.999."""
    rng = np.random.default_rng(seed)
    images, limit = 50_000, 1.5
    shards = shard_bounds(images, 512)
    stops, read = 0, 0
    for _ in range(trials):
        base = rng.random(images) < 0.73
        right, wrong = np.flatnonzero(base), np.flatnonzero(~base)
        better = int(0.05 * images)
        worse = better + round(drop / 100 * images)
        cand = base.copy()
        cand[rng.choice(right, worse, replace=False)] = False
        cand[rng.choice(wrong, better, replace=False)] = True
        order = rng.permutation(images)  # the seeded random validation order
        base, cand = base[order], cand[order]
        early = EarlyStopping(base, shards, limit, 0.999)
        w = b = seen = 0
        stopped_at = images
        for index, (start, stop) in enumerate(shards):
            dw, db = early.paired(index, cand[start:stop])
            w, b, seen = w + dw, b + db, seen + stop - start
            if early.stops(w, b, seen, index + 1) is not None:
                stops += 1
                stopped_at = stop
                break
        read += stopped_at
    return stops, read / trials


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="simulated candidates per wrong-stop row")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    data_argument(parser)
    args = parser.parse_args()

    digits = args.data == "digits"
    rows = (real_rows(bench_spec("digits"), "digits demo", 200) + synthetic_rows() if digits else
            real_rows(bench_spec(args.data), "Fashion-MNIST joint spec, selection split", 60))
    lines = ["| case | full evaluations (off / on) | stopped early | images per gated-through candidate (off / on) "
             "| validation images saved | wall time (off / on) | feasible points identical (count) | same candidates "
             "in the same order | same Pareto set (else: differs only by stopped candidates) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wall = (f"{r['wall'][0] / 3600:.1f} h / {r['wall'][1] / 3600:.1f} h (modelled)" if r.get("modelled")
                else f"{r['wall'][0]:.0f} s / {r['wall'][1]:.0f} s")
        lines.append(f"| {r['case']} | {r['full'][0]} / {r['full'][1]} | {r['stopped']} | "
                     f"{r['per_candidate'][0]:,.0f} / {r['per_candidate'][1]:,.0f} | {r['saved']:.1%} | {wall} | "
                     f"{'yes' if r['identical'] else 'NO'} ({r['points']}) | {'yes' if r['same_path'] else 'no'} | "
                     f"{'yes' if r['same_pareto'] else ('no (yes)' if r['only_stopped'] else 'no (NO)')} |")
    total_saved = [r["saved"] for r in rows]
    lines += ["", "Without early stopping, a collapsed candidate with the smallest footprint can be an (infeasible) "
              "point of the front; with it, it is stopped and never a point, which is the only way the fronts "
              "differ.", "", f"fraction of validation images saved: {', '.join(f'{s:.1%}' for s in total_saved)} "
                  f"(rows above, in order)",
              f"feasible points identical: {'yes' if all(r['identical'] for r in rows) else 'no'}", ""]
    name, title, command = section("early_stopping", "Early stopping of full validation", args.data)
    if not digits:
        publish(name, title, command, "\n".join(lines), write=args.write)
        return 0
    lines += ["Wrong stops at ImageNet scale (50,000 images, 98 looks, confidence 0.999, baseline 73 %, 10 % "
              "discordant images; a stop of a candidate within the limit is wrong):", "",
              "| true drop (points) | candidates | stopped | mean images read |", "|---:|---:|---:|---:|"]
    for drop in (1.5, 1.0, 3.0, 5.0, 20.0):
        stops, read = wrong_stops(args.trials if drop <= 1.5 else max(100, args.trials // 10), drop)
        count = args.trials if drop <= 1.5 else max(100, args.trials // 10)
        lines.append(f"| {drop:g} | {count} | {stops} | {read:,.0f} |")
        print(lines[-1], file=sys.stderr)
    body = "\n".join(lines)
    publish(name, title, command, body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
