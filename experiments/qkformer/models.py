"""A QKFormer for the digits data, as a `custom` model (see spec.yaml beside this file)."""

from spikingjelly.activation_based.model import QKFormer
from torch import nn


def qkformer_digits(embed_dims: int = 64, T: int = 4) -> nn.Module:
    """SpikingJelly's QKFormer sized for 1x16x16 digits: three stages, one block each."""
    return QKFormer(T=T, in_channels=1, num_classes=10, embed_dims=embed_dims,
                    num_heads=(2, 2, 4), depths=(1, 1, 1))
