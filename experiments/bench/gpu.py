"""GPU section: validation throughput of Spikformer-8-512 (random weights, 224x224, T=4)
in FP32 and under autocast (bf16, fp16), with and without channels_last, and how often
autocast's top-1 agrees with FP32's. Runs only where CUDA is present (no test needs it).

    python experiments/bench/gpu.py [--batch 64] [--batches 20] [--write]

The inputs are synthetic images (random weights make accuracy meaningless; top-1
agreement between precisions on the same inputs is what autocast may change). Each
setting is timed after a warm-up pass (cudnn.benchmark on, as evaluations run it), with
synchronisation only at the ends.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from _results import publish
from autocompress.evaluation import precision_context
from autocompress.models import create_model
from autocompress.spec import validate_spec

SPEC = {"name": "gpu", "model": {"family": "spikformer_imagenet", "args": {"T": 4, "embed_dims": 512, "depths": 8,
                                                                             "num_heads": 8, "num_classes": 1000}},
        "data": {"dataset": "imagefolder", "root": "/nonexistent", "image_size": 224},
        "constraints": {"accuracy": {"max_drop": 1.5}, "memory": {"min_saving": 0.5}}}


def run(model, inputs, autocast: str, channels_last: bool) -> tuple[float, torch.Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    predictions = []
    with torch.inference_mode(), precision_context(inputs[0].device, autocast):
        model(inputs[0].to(memory_format=fmt))  # warm-up (cudnn picks its kernels)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in inputs:
            predictions.append(model(batch.to(memory_format=fmt)).argmax(1))
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return sum(len(b) for b in inputs) / seconds, torch.cat(predictions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU section is skipped (run this on a GPU machine)")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = create_model(validate_spec(SPEC, check_paths=False).model).cuda().eval()
    generator = torch.Generator(device="cuda").manual_seed(0)
    inputs = [torch.randn(args.batch, 3, 224, 224, device="cuda", generator=generator) for _ in range(args.batches)]
    rows, reference = [], None
    for autocast in ("off", "bf16", "fp16"):
        for channels_last in (False, True):
            rate, predicted = run(model, inputs, autocast, channels_last)
            if reference is None:
                reference = predicted
            agreement = (predicted == reference).float().mean().item()
            rows.append((autocast, channels_last, rate, agreement))
            print(rows[-1], file=sys.stderr)
    base = rows[0][2]
    lines = [f"{torch.cuda.get_device_name(0)}; Spikformer-8-512, random weights, 224x224, T=4, batch {args.batch}, "
             f"{args.batches * args.batch} synthetic images per setting.", "",
             "| precision | channels_last | images/s | vs FP32 | top-1 agreement with FP32 |", "|---|---|---:|---:|---:|"]
    for autocast, channels_last, rate, agreement in rows:
        lines.append(f"| {'FP32' if autocast == 'off' else autocast} | {'yes' if channels_last else 'no'} | "
                     f"{rate:,.0f} | {rate / base:.2f}x | {agreement:.2%} |")
    publish("gpu", "GPU: FP32 vs autocast", "python experiments/bench/gpu.py --write", "\n".join(lines),
            write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
