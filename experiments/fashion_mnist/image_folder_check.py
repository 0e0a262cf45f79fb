"""The test set as a user would have it: a grayscale image folder, one folder per class named
by the class (``Ankle boot``, ``Bag``, ...), with the class order given in the spec
(``data.classes``). Evaluates the shipped reference through it and through the IDX reader
and compares them image for image; then once more without the class order, to show what a
folder numbered by sorted names does to a model trained in the data set's own order.

    python experiments/fashion_mnist/image_folder_check.py [--root /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from autocompress.data.fashion_mnist import CLASSES, read_split
from autocompress.engine import Session
from autocompress.reference import available_reference
from autocompress.spec import load_spec, validate_spec

SPEC = Path(__file__).resolve().parent / "joint.yaml"


def folder_name(label: int) -> str:
    return CLASSES[label].replace("/", "-")  # "T-shirt/top" cannot be a folder name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    images, labels = read_split(Path(args.root), "test")
    idx_spec = load_spec(SPEC, overrides=[f"data.root={args.root}", "data.validation.holdout=0"])
    with tempfile.TemporaryDirectory(prefix="fmnist-folders-") as folder:
        root = Path(folder) / "test"
        for i, (image, label) in enumerate(zip(images, labels)):
            (root / folder_name(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(root / folder_name(label) / f"{i:05d}.png")
        results = {}
        for name, classes in (("folders, class order given", [folder_name(c) for c in range(10)]),
                              ("folders, sorted names", None)):
            data = idx_spec.model_dump(mode="json")
            data["data"].update({"dataset": "imagefolder", "root": str(root), "classes": classes,
                                 "calibration": {"size": 64, "seed": 0, "root": str(root)},
                                 "transform": {"preset": "fashion_mnist"}})
            data["output"]["run_dir"] = None
            data["model"]["checkpoint"] = str(available_reference("fmnist-spikformer"))  # the same weights, as a file
            session = Session.open(validate_spec(data, base_dir=SPEC.parent), say=lambda _m: None)
            result = session.evaluate()
            order = np.argsort([int(Path(path).stem) for path, _ in session.data.validation.samples])
            results[name] = (result, np.asarray(result.per_image)[order])
        session = Session.open(idx_spec, say=lambda _m: None)
        idx = session.evaluate()
        results["IDX files"] = (idx, np.asarray(idx.per_image))
    reference = results["IDX files"][1]
    print("| reader | top-1 % | images | per-image correctness differing from the IDX reader |")
    print("|---|---:|---:|---:|")
    for name, (result, per_image) in results.items():
        print(f"| {name} | {result.accuracy:.2f} | {result.total:,} | {int((per_image != reference).sum())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
