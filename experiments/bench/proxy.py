"""Proxy quality: does membrane-potential drift predict the accuracy drop?

Samples random joint candidates (per-block pruning rates and bit-widths, seeded) on
a reference model, computes each one's drift on the calibration batch and its accuracy
on the search's validation items (the selection split where there is one), and prints
the Spearman rank correlation between drift and accuracy drop, with the cost of one
proxy evaluation against one full evaluation. ``--no-logits`` leaves the logits term out
of the drift (``proxy.logits: false``), the drift before it existed.

    python experiments/bench/proxy.py [--samples 60] [--seed 0] [--granularity block]
        [--data digits|fashion_mnist] [--no-logits] [--write]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.stats import spearmanr

from _results import DATA, data_argument, publish, section
from autocompress.engine import Setup, Worker
from autocompress.spec import load_spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--granularity", default="block", choices=["network", "stage", "block", "layer"])
    parser.add_argument("--spec", help="another spec than --data's")
    parser.add_argument("--no-logits", action="store_true", help="the drift without its logits term")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    data_argument(parser)
    args = parser.parse_args()

    spec = load_spec(args.spec or DATA[args.data][0])
    spec.space.granularity = args.granularity
    spec.proxy.logits = not args.no_logits
    setup = Setup.open(spec, say=lambda m: print(m, file=sys.stderr))
    space = setup.space
    evaluator = Worker(setup.session, setup.groups)
    baseline = evaluator.baseline()["accuracy"]
    rng = np.random.default_rng(args.seed)
    seen, rows = set(), []
    proxy_seconds = full_seconds = 0.0
    while len(rows) < args.samples and len(seen) < space.cardinality():
        config = tuple(int(rng.integers(len(d.choices))) for d in space.dims)
        if config in seen:
            continue
        seen.add(config)
        candidate = space.candidate(config)
        start = time.perf_counter()
        _, drift, _ = evaluator.probe(candidate)
        proxy_seconds += time.perf_counter() - start
        start = time.perf_counter()
        accuracy = evaluator.full(candidate).accuracy
        full_seconds += time.perf_counter() - start
        rows.append((drift, baseline - accuracy))
        print(f"{len(rows):3d}  drift {drift:8.4f}  drop {baseline - accuracy:7.2f}  {candidate.to_dict()}", file=sys.stderr)
    drifts, drops = np.array(rows).T
    rho, p_value = spearmanr(drifts, drops)
    proxy_ms, full_ms = proxy_seconds / len(rows) * 1000, full_seconds / len(rows) * 1000
    # Random candidates are mostly far from the limit: the correlation near it is the one the gate lives on.
    near_cut = 10 * spec.constraints.accuracy.max_drop
    near = drops <= near_cut
    near_rho = f"{spearmanr(drifts[near], drops[near])[0]:.3f}" if near.sum() > 2 else "too few"
    body = "\n".join([
        f"{len(rows)} random joint candidates (seed {args.seed}) at {args.granularity} granularity "
        f"({space.describe()}) on {spec.model.checkpoint} ({spec.data.dataset}, baseline {baseline:.2f} % on "
        f"{len(evaluator.order):,} validation images); drift {'with' if spec.proxy.logits else 'without'} its "
        "logits term.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| Spearman correlation, drift vs accuracy drop | {rho:.3f} (p = {p_value:.2g}) |",
        f"| ... among the {near.sum()} candidates that lose at most {near_cut:g} points (10x the limit) | {near_rho} |",
        f"| one proxy evaluation (compressed model built, one calibration forward of {spec.data.calibration.size} "
        f"images) | {proxy_ms:.0f} ms |",
        f"| one full evaluation ({len(evaluator.order):,} validation images) | {full_ms:.0f} ms |",
        f"| full / proxy cost | {full_seconds / proxy_seconds:.2f}x |",
    ])
    name, title, command = section("proxy", "Proxy quality and cost", args.data)
    if args.no_logits:
        name, title, command = name + "-no-logits", title + ", drift without logits", command.replace(
            " --write", " --no-logits --write")
    publish(name, title, command, body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
