"""Proxy quality: does membrane-potential drift predict the accuracy drop?

Samples random joint candidates (per-block pruning rates and bit-widths, seeded) on
the digits reference model, computes each one's drift on the calibration batch and its
full test accuracy, and prints the Spearman rank correlation between drift and accuracy
drop, with the cost of one proxy evaluation against one full evaluation.

    python experiments/digits/proxy_quality.py [--samples 60] [--seed 0] [--granularity block]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from autocompress.compress import find_channel_groups, quantizable_layers
from autocompress.engine import Session
from autocompress.engine.evaluator import SessionEvaluator
from autocompress.engine.space import build_space
from autocompress.spec import load_spec

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--granularity", default="block", choices=["network", "stage", "block", "layer"])
    parser.add_argument("--spec", default=str(HERE / "spec.yaml"))
    args = parser.parse_args()

    spec = load_spec(args.spec)
    spec.space.granularity = args.granularity
    session = Session.open(spec, say=lambda m: print(m, file=sys.stderr))
    groups = find_channel_groups(session.model)
    space = build_space(spec, groups, quantizable_layers(session.model.net))
    evaluator = SessionEvaluator(session, groups)
    baseline = evaluator.baseline_accuracy()
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
        _, drift = evaluator.probe(candidate)
        proxy_seconds += time.perf_counter() - start
        start = time.perf_counter()
        accuracy = evaluator.full(candidate)
        full_seconds += time.perf_counter() - start
        rows.append((drift, baseline - accuracy))
        print(f"{len(rows):3d}  drift {drift:8.4f}  drop {baseline - accuracy:7.2f}  {candidate.to_dict()}", file=sys.stderr)
    drifts, drops = np.array(rows).T
    rho, p_value = spearmanr(drifts, drops)
    print(f"candidates: {len(rows)} random joint candidates at {args.granularity} granularity ({space.describe()})")
    print(f"Spearman correlation, drift vs accuracy drop: {rho:.3f} (p = {p_value:.2g})")
    print(f"cost: proxy {proxy_seconds / len(rows) * 1000:.0f} ms, full evaluation {full_seconds / len(rows) * 1000:.0f} ms "
          f"per candidate (build included in the proxy); ratio {full_seconds / proxy_seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
