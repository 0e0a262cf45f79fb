"""Uniform compression of the digits reference model: accuracy, footprint, file size.

Prunes 0/25/50 % of every block's MLP hidden channels (L2 filter ranking) and
quantizes all weights at 32/8/4/3/2 bits, evaluates each configuration on the 360
test digits, exports it, and prints a Markdown table: accuracy, computed footprint,
exported file bytes. A second table compares L2 ranking with variance-based pruning
(VBP, with its mean compensation) at 32 bits. With ``--write`` the tables replace the
marked section of experiments/digits/README.md.

    python experiments/digits/compression_table.py [--write]

Trains the reference model first if it is not cached (about 80 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from autocompress.compress import (
    baseline_footprint,
    compress_model,
    export_compressed,
    find_channel_groups,
    footprint,
    quantizable_layers,
)
from autocompress.engine import Session
from autocompress.evaluation import evaluate_accuracy
from autocompress.spec import load_spec

HERE = Path(__file__).resolve().parent
MARKERS = ("<!-- compression-table:start -->", "<!-- compression-table:end -->")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update experiments/digits/README.md")
    args = parser.parse_args()

    session = Session.open(load_spec(HERE / "spec.yaml"), progress=True, say=lambda m: print(m, file=sys.stderr))
    model, data = session.model, session.data
    groups = find_channel_groups(model)
    mlp = [g.name for g in groups.groups if g.kind == "mlp"]
    layers = quantizable_layers(model.net)
    base_bytes = baseline_footprint(model)
    base_acc = evaluate_accuracy(model, data).accuracy

    rows = ["| MLP hidden pruned | weight bits | top-1 accuracy | drop (points) | footprint bytes | saving | exported file bytes |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (0.0, 0.25, 0.5):
            for bits in (32, 8, 4, 3, 2):
                compressed = compress_model(model, importance="l2", clip=False, fold=None, recalibrate=None,
                                            prune={name: rate for name in mlp},
                                            bits={layer: bits for layer in layers}, groups=groups)
                accuracy = evaluate_accuracy(compressed, data).accuracy
                size = footprint(compressed)
                file_bytes = export_compressed(compressed, Path(tmp) / "m.safetensors")
                rows.append(f"| {rate:.0%} | {bits} | {accuracy:.2f} % | {base_acc - accuracy:+.2f} | {size:,} | "
                            f"{1 - size / base_bytes:.1%} | {file_bytes:,} |")
                print(rows[-1], file=sys.stderr)
    vbp = ["| MLP hidden pruned | L2 ranking | variance ranking (VBP) with mean compensation | VBP without compensation |",
           "|---:|---:|---:|---:|"]
    for rate in (0.25, 0.5, 0.75):
        prune = {name: rate for name in mlp}
        accuracies = [
            evaluate_accuracy(compress_model(model, prune=prune, importance=imp, compensate=comp, clip=False,
                                             fold=None, recalibrate=None, calibration=data.calibration,
                                             groups=groups), data).accuracy
            for imp, comp in (("l2", None), ("variance", True), ("variance", False))
        ]
        vbp.append(f"| {rate:.0%} | " + " | ".join(f"{a:.2f} %" for a in accuracies) + " |")
    seconds = time.perf_counter() - start

    text = "\n".join([
        MARKERS[0],
        f"Reference model: {base_acc:.2f} % top-1 on the {len(data.validation)} test digits, "
        f"footprint {base_bytes:,} bytes (FP32). Produced by `python experiments/digits/compression_table.py "
        f"--write` on {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__} "
        f"({seconds:.0f} s).",
        "",
        *rows,
        "",
        "Variance-based pruning on the same model (all weights 32-bit), top-1 accuracy:",
        "",
        *vbp,
        MARKERS[1],
    ])
    print(text)
    if args.write:
        readme = HERE / "README.md"
        content = readme.read_text()
        pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
        content = pattern.sub(lambda _: text, content) if pattern.search(content) else content.rstrip() + "\n\n" + text + "\n"
        readme.write_text(content)
        print(f"updated {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
