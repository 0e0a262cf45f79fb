"""Factories a spec can name as ``family: custom`` (used by the tests)."""

from spikingjelly.activation_based.model import Spikformer
from torch import nn


def tiny_spikformer(embed_dims: int = 16, num_classes: int = 10) -> nn.Module:
    return Spikformer(T=2, in_channels=1, img_size_h=16, img_size_w=16, patch_size=4, num_classes=num_classes,
                      embed_dims=embed_dims, num_heads=2, mlp_ratio=2.0, depths=1)


def not_a_module():
    return "a string"


def no_neurons() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 10))


def tiny_qkformer(embed_dims: int = 32, num_classes: int = 10) -> nn.Module:
    from spikingjelly.activation_based.model import QKFormer

    return QKFormer(T=2, in_channels=1, num_classes=num_classes, embed_dims=embed_dims,
                    num_heads=(2, 2, 2), depths=(1, 1, 1))
