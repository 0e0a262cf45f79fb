"""Regenerate the trained weights the test suite loads instead of training them on every run.

    python tests/make_fixtures.py

- fixtures/tiny/<family>.pt: the tiny SViTs of test_compress.py (32-dim, 2 blocks),
  trained 6 epochs on digits so that their neurons fire as in use;
- fixtures/references/digits-spikformer.{pt,json}: the demo's reference model, trained
  by its recipe exactly as `autocompress train-reference digits-spikformer` trains it
  (about 100 s on 2 cores); the suite copies it into each test's cache.

Each file is a plain state dict (loaded with weights_only=True).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from conftest import FIXTURES, TINY_ARGS, tiny_trained_model

from autocompress.data.digits import digits_split
from autocompress.reference.train import train_classifier


def main() -> int:
    (FIXTURES / "tiny").mkdir(parents=True, exist_ok=True)
    train_x, train_y, _, _ = digits_split(16)
    for family in sorted(TINY_ARGS):
        model = tiny_trained_model(family, load=False)
        train_classifier(model, train_x, train_y, epochs=6, batch_size=64, lr=4e-3, weight_decay=0.01)
        torch.save(model.net.state_dict(), FIXTURES / "tiny" / f"{family}.pt")
        print(f"tiny/{family}.pt")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AUTOCOMPRESS_CACHE"] = cache
        from autocompress.reference.train import train_reference

        train_reference("digits-spikformer", progress=False)
        target = FIXTURES / "references"
        target.mkdir(exist_ok=True)
        for suffix in (".pt", ".json"):
            shutil.copy(Path(cache) / "references" / f"digits-spikformer{suffix}", target)
    print("references/digits-spikformer.pt, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
