"""Evaluation overhead: autocompress's evaluator against a minimal hand-written loop
over the same model and the same images, measured side by side in one run.

    python experiments/bench/eval_overhead.py [--repeats 5] [--write]

The hand-written loop is what a user would write: stack the validation images once,
then `model(batch).argmax(1)` batch by batch under inference mode, resetting the
neurons per batch. autocompress's `evaluate_accuracy` reads the Dataset through a
DataLoader, moves batches to the device and counts unreadable images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from spikingjelly.activation_based import functional

from _results import DIGITS_SPEC, publish
from autocompress.engine import Session, evaluate_accuracy
from autocompress.spec import load_spec


def hand_written(model, images, labels, batch_size: int) -> float:
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            functional.reset_net(model.net)
            logits = model(images[start:start + batch_size])
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return 100.0 * correct / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    spec = load_spec(DIGITS_SPEC)
    session = Session.open(spec, say=lambda _m: None)
    data, batch = session.data, spec.data.batch_size
    pairs = [data.validation[i] for i in range(len(data.validation))]
    images = torch.stack([p[0] for p in pairs])
    labels = torch.tensor([int(p[1]) for p in pairs])
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        start = time.perf_counter()
        a = evaluate_accuracy(session.model, data, batch_size=batch, workers=0, device=session.device).accuracy
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = hand_written(session.model, images, labels, batch)
        theirs.append(time.perf_counter() - start)
        assert abs(a - b) < 1e-9, (a, b)
    n = len(images)
    o, t = statistics.median(ours), statistics.median(theirs)
    body = "\n".join([
        f"Digits reference model, {n} validation images, batch {batch}, median of {args.repeats} interleaved runs "
        f"(both give {a:.2f} % top-1).", "",
        "| evaluator | seconds | images/s |", "|---|---:|---:|",
        f"| autocompress `evaluate_accuracy` | {o:.3f} | {n / o:,.0f} |",
        f"| hand-written loop over pre-stacked tensors | {t:.3f} | {n / t:,.0f} |",
        f"| overhead (autocompress / hand-written time) | {o / t:.2f}x | |",
    ])
    publish("eval_overhead", "Evaluation overhead", "python experiments/bench/eval_overhead.py --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
