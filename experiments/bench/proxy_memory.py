"""Proxy memory: peak RSS of one probe (reference potentials + one candidate's drift) for
Spikformer-8-512 (random weights, 224x224, T=4) on the CPU, at several calibration sizes.

Two ways to hold the reference, side by side, each in a fresh process:
- kept: the whole batch's reference potentials in memory (what a small model gets, and
  what every model got before issue 15; the candidate is now compared layer by layer as
  it computes, where it used to be materialised whole too);
- budgeted: autocompress.proxy.ReferencePotentials with a memory budget (the worker's
  default, 1 GiB): the reference is recomputed chunk by chunk and compared as both run.
The candidate: every layer fake-quantized to 4 bits and one MLP group pruned by half.
The drift of both ways is printed: it must agree to float tolerance.

    python experiments/bench/proxy_memory.py [--sizes 8 32 64] [--budget-gib 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _results import publish

MODEL = {"family": "spikformer_imagenet",
         "args": {"T": 4, "embed_dims": 512, "num_heads": 8, "depths": 8, "image_size": 224}}


def child(mode: str, size: int, budget_gib: float) -> dict:
    import torch
    from pydantic import TypeAdapter

    from autocompress.compress import compress_model, find_channel_groups, quantizable_layers
    from autocompress.models import create_model
    from autocompress.proxy import ReferencePotentials
    from autocompress.spec import ModelSpec

    torch.manual_seed(0)
    model = create_model(TypeAdapter(ModelSpec).validate_python(MODEL)).eval()
    images = torch.randn(size, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    groups = find_channel_groups(model)
    mlp = next(g.name for g in groups.groups if g.kind == "mlp")
    candidate = compress_model(model, importance="l2", clip=False, prune={mlp: 0.5}, bits={k: 4 for k in quantizable_layers(model.net)},
                               groups=groups)
    start = time.perf_counter()
    budget = 1 << 62 if mode == "kept" else int(budget_gib * 2**30)
    reference = ReferencePotentials(model, images, budget_bytes=budget)
    drift = reference.drift(candidate, groups.by_name(), candidate.pruned_channels)
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "drift": drift,
            "seconds": time.perf_counter() - start, "chunk": reference.chunk,
            "reference_gib_per_image": reference.bytes_per_image / 2**30}


def available_gib() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--budget-gib", type=float, default=1.0)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.budget_gib)))
        return 0
    rows, per_image = {}, None
    for size in args.sizes:
        for mode in ("kept", "budgeted"):
            if mode == "kept" and per_image is not None and 3.5 * per_image * size + 1.5 > 0.8 * available_gib():
                rows[(mode, size)] = None  # would not fit this machine's memory
                continue
            done = subprocess.run([sys.executable, __file__, "--child", mode, str(size), "--budget-gib",
                                   str(args.budget_gib)], capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            rows[(mode, size)] = json.loads(done.stdout.strip().splitlines()[-1])
            per_image = rows[(mode, size)]["reference_gib_per_image"]
            print(mode, size, rows[(mode, size)], file=sys.stderr)
    lines = [f"Spikformer-8-512 (spikformer_imagenet, random weights), 224x224, T=4, CPU; reference potentials "
             f"{per_image * 1024:.0f} MiB per calibration image; budget {args.budget_gib:g} GiB. Peak RSS of a "
             "process that builds the model, the candidate, the reference and one drift.", "",
             "| calibration images | kept: peak RSS | budgeted: peak RSS (chunk) | kept / budgeted | drift kept | "
             "drift budgeted | s kept | s budgeted |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in args.sizes:
        kept, budgeted = rows[("kept", size)], rows[("budgeted", size)]
        lines.append(
            f"| {size} | " + (f"{kept['peak_rss_gib']:.2f} GiB" if kept else "does not fit here") + " | "
            f"{budgeted['peak_rss_gib']:.2f} GiB ({budgeted['chunk']}) | "
            + (f"{kept['peak_rss_gib'] / budgeted['peak_rss_gib']:.2f}x" if kept else "-") + " | "
            + (f"{kept['drift']:.6f}" if kept else "-") + f" | {budgeted['drift']:.6f} | "
            + (f"{kept['seconds']:.0f}" if kept else "-") + f" | {budgeted['seconds']:.0f} |")
    both = [(rows[("kept", s)], rows[("budgeted", s)]) for s in args.sizes if rows[("kept", s)]]
    worst = max((abs(k["drift"] - b["drift"]) / max(abs(k["drift"]), 1e-12) for k, b in both), default=0.0)
    largest = rows[("budgeted", max(args.sizes))]
    lines += ["", f"Drift, kept vs budgeted: largest relative difference {worst:.1e} (batches of another size "
              "round differently inside the convolutions, which can move a spike; the algorithm is the same sum).",
              f"Peak RSS at {max(args.sizes)} calibration images, budgeted: {largest['peak_rss_gib']:.2f} GiB "
              f"({largest['peak_rss_gib'] * 2**30 / 1e9:.2f} GB; target <= 3 GB)."]
    publish("proxy_memory", "Proxy memory", "python experiments/bench/proxy_memory.py --write", "\n".join(lines),
            write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
