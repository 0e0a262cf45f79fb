"""Reference models autocompress trains itself on embedded data.

Nothing can be downloaded at run time, so the demo's pre-trained SViT is trained
locally, once, from a fixed recipe and cached (see :mod:`autocompress.reference`).
A spec names one as ``checkpoint: reference:NAME``. This module is pure data so that
validating a spec does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autocompress.vocabulary import canonical_family

__all__ = ["REFERENCES", "ReferenceRecipe", "check_reference_fits", "get_recipe"]


@dataclass(frozen=True)
class ReferenceRecipe:
    """How a reference model is built and trained, and the accuracy it must reach."""

    name: str
    description: str
    family: str
    args: dict[str, Any]
    dataset: str
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    max_shift: int = field(default=1, metadata={"help": "random translation, in pixels, for augmentation"})
    flip: bool = field(default=False, metadata={"help": "random horizontal flips, for augmentation"})
    seed: int = 0
    min_accuracy: float = 95.0
    sha256: str | None = field(default=None, metadata={"help": "of the weights shipped in the package, if any"})
    record_epochs: bool = field(default=False, metadata={
        "help": "measure and record the test accuracy after every epoch (never used to choose the weights)"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REFERENCES: dict[str, ReferenceRecipe] = {
    recipe.name: recipe
    for recipe in [
        ReferenceRecipe(
            name="digits-spikformer",
            description="SpikingJelly's Spikformer (T=4, 16x16 input, patch 4, 64-dim, 4 heads, 2 blocks) on scikit-learn's digits",
            family="spikingjelly_spikformer",
            args={
                "T": 4, "in_channels": 1, "image_size": 16, "patch_size": 4, "num_classes": 10,
                "embed_dims": 64, "num_heads": 4, "mlp_ratio": 4.0, "depths": 2,
            },
            dataset="digits",
            image_size=16,
            epochs=30,
            batch_size=64,
            lr=2e-3,
            weight_decay=1e-2,
        ),
        ReferenceRecipe(
            name="fmnist-spikformer",
            description="SpikingJelly's Spikformer (T=2, 16x16 grayscale input, patch 4, 96-dim, 4 heads, 2 blocks) "
                        "on Fashion-MNIST's 60,000 training images (resized from 28x28)",
            family="spikingjelly_spikformer",
            args={
                "T": 2, "in_channels": 1, "image_size": 16, "patch_size": 4, "num_classes": 10,
                "embed_dims": 96, "num_heads": 4, "mlp_ratio": 4.0, "depths": 2,
            },
            dataset="fashion_mnist",
            image_size=16,
            epochs=16,
            batch_size=128,
            lr=3e-3,
            weight_decay=1e-2,
            max_shift=1,
            flip=True,
            min_accuracy=89.0,
            record_epochs=True,
            sha256="3d8b19e907686ebeb45274bf143cadded867be6575ceaecf887c6d75088fe4d8",
        ),
    ]
}


def get_recipe(name: str) -> ReferenceRecipe:
    try:
        return REFERENCES[name]
    except KeyError:
        raise KeyError(f"unknown reference model '{name}'; known: {', '.join(sorted(REFERENCES))}") from None


def check_reference_fits(name: str, family: str, args: dict[str, Any], dataset: str,
                         image_size: int | None) -> None:
    """Raise ValueError unless a spec's model (family, args) and data (dataset, image size)
    are the recipe's."""
    if name not in REFERENCES:
        raise ValueError(
            f"model.checkpoint: unknown reference model '{name}'; known: {', '.join(sorted(REFERENCES))}"
        )
    recipe = REFERENCES[name]
    if canonical_family(family) != recipe.family:
        raise ValueError(f"model.family: reference model '{name}' is a {recipe.family}, the spec says {family}")
    differ = [f"{key} (spec {args.get(key)!r}, reference {value!r})" for key, value in recipe.args.items() if args.get(key) != value]
    if differ:
        raise ValueError(f"model.args: reference model '{name}' was trained with other arguments: {'; '.join(differ)}")
    if dataset != recipe.dataset or image_size != recipe.image_size:
        raise ValueError(f"data: reference model '{name}' is trained on {recipe.dataset} at {recipe.image_size}px; "
                         f"the spec uses {dataset} at {image_size}px")
