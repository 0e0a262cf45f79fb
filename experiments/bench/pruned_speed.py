"""Pruned speed: measured CPU latency speed-up of structurally pruned SViTs against
their parameter and MAC reduction, side by side in one run.

Every searched channel-group kind (stem, attention q/k and v, MLP hidden) is pruned at
the same rate with L2 importance; the residual stream keeps its width (as in the
default search spaces). Latency is the median of repeated forward passes under
inference mode, the pruned and unpruned models interleaved.

    python experiments/bench/pruned_speed.py [--repeats 15] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from pydantic import TypeAdapter
from spikingjelly.activation_based import functional

from _results import DIGITS_SPEC, publish
from autocompress.compress import compress_model, find_channel_groups
from autocompress.engine import Session
from autocompress.models import create_model
from autocompress.spec import ModelSpec, load_spec

KINDS = {"stem", "attention_qk", "attention_v", "mlp"}


def macs(model, images) -> int:
    """Multiply-accumulates of the convolutions and linears in one forward pass of ``images``."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            total[0] += output.numel() * module.in_features
        else:
            kernel = module.weight.shape[1] * int(torch.tensor(module.weight.shape[2:]).prod())
            total[0] += output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in model.net.modules()
             if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        functional.reset_net(model.net)
        model(images)
    for hook in hooks:
        hook.remove()
    return total[0]


def latency(model, images) -> float:
    with torch.inference_mode():
        functional.reset_net(model.net)
        start = time.perf_counter()
        model(images)
        return time.perf_counter() - start


def measure(name: str, model, images, rates, repeats: int) -> list[str]:
    groups = find_channel_groups(model, example=images[:4])
    variants = {0.0: model}
    for rate in rates:
        prune = {g.name: rate for g in groups.groups if g.kind in KINDS}
        variants[rate] = compress_model(model, prune=prune, groups=groups, importance="l2", clip=False)
    for m in variants.values():  # warm up
        latency(m, images)
    times = {rate: [] for rate in variants}
    for _ in range(repeats):
        for rate, m in variants.items():
            times[rate].append(latency(m, images))
    base_params = sum(p.numel() for p in model.parameters())
    base_macs, base_time = macs(model, images), statistics.median(times[0.0])
    rows = []
    for rate, m in variants.items():
        params = sum(p.numel() for p in m.parameters())
        t = statistics.median(times[rate])
        rows.append(f"| {name} | {rate:.0%} | {params:,} | {base_params / params:.2f}x | {macs(m, images) / 1e6:,.1f} | "
                    f"{base_macs / macs(m, images):.2f}x | {t * 1000:.1f} | {base_time / t:.2f}x |")
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    spec = load_spec(DIGITS_SPEC)
    session = Session.open(spec, say=lambda _m: None)
    digits = session.data.calibration[:64]
    rows = measure("digits reference (T=4, 16x16, 64-dim, 2 blocks), batch 64", session.model, digits, args.rates,
                   args.repeats)
    larger = create_model(TypeAdapter(ModelSpec).validate_python({
        "family": "spikingjelly_spikformer", "args": {"T": 4, "in_channels": 3, "image_size": 64, "patch_size": 16,
                                         "num_classes": 100, "embed_dims": 384, "num_heads": 6, "depths": 4}}))
    images = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rows += measure("Spikformer-4-384 (T=4, 64x64, untrained), batch 8", larger, images, args.rates, args.repeats)
    body = "\n".join([
        f"CPU latency of one forward pass, median of {args.repeats} interleaved runs, "
        f"{torch.get_num_threads()} torch threads. Pruned: every stem, attention and MLP channel group at the rate "
        "shown (L2), residual width kept. Reduction = unpruned / pruned.", "",
        "| model | pruning rate | parameters | parameter reduction | MMACs per batch | MAC reduction | "
        "latency ms | speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|", *rows])
    publish("pruned_speed", "Pruned speed", "python experiments/bench/pruned_speed.py --write", body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
