"""Networks that compute what the official Spikformer and Spike-driven Transformer code computes.

SpikingJelly 2.0's ``Spikformer`` is not the network the Spikformer authors trained
(ZK-Zhou/spikformer): its stem stages run conv -> BN -> max-pool -> LIF, the official
code conv -> BN -> LIF -> max-pool, and its head averages the logits over time steps
where the official code averages the features first, so on the same weights they
predict differently (tests/test_official.py). :class:`OfficialSpikformer` keeps
SpikingJelly's blocks (whose fused q/k/v convolution computes exactly what the
official separate q, k, v layers compute) and uses the official stem order and head.
One class covers both official variants: the ImageNet code pools after all four stem
stages (patch 16), the CIFAR code after the last two (patch 4).

SpikingJelly's ``SpikeDrivenTransformer`` is the official Spike-driven Transformer v1
(BICLab/Spike-Driven-Transformer) up to names and two details handled here: the
official head applies the classifier at each time step and then averages
(:class:`OfficialSpikeDrivenTransformer`), and the official stem convolutions have no
bias (an imported checkpoint sets SpikingJelly's to zero).

Checkpoints in the official layouts are converted by :mod:`autocompress.models.convert`.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from spikingjelly.activation_based.model.spike_driven_transformer import SpikeDrivenTransformer
from spikingjelly.activation_based.model.spikformer import (
    Spikformer,
    SpikformerConv2dBNLIF,
    SpikformerPatchStem,
)
from torch import nn


class SpikeThenPool(SpikformerConv2dBNLIF):
    """A stem stage in the official order: conv -> BN -> LIF, then (optionally) max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, padding=1, pool=False)
        self.pool = layer.SeqToANNContainer(nn.MaxPool2d(kernel_size=3, stride=2, padding=1)) if pool else None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x_seq = self.neuron(self.conv_bn(x_seq))
        return self.pool(x_seq) if self.pool is not None else x_seq


class OfficialSpikformerStem(SpikformerPatchStem):
    """Spikformer's spiking patch splitting (SPS) as the official code runs it."""

    def __init__(self, img_size: int, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__(img_size_h=img_size, img_size_w=img_size, patch_size=patch_size,
                         in_channels=in_channels, embed_dims=embed_dims)
        dims = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        pool_from = 2 if patch_size == 4 else 0
        self.stages = nn.Sequential(*(SpikeThenPool(dims[i], dims[i + 1], pool=i >= pool_from) for i in range(4)))


class OfficialSpikformer(Spikformer):
    """The official Spikformer (ImageNet: ``patch_size=16``; CIFAR: ``patch_size=4``)."""

    def __init__(self, *, T: int, in_channels: int, img_size: int, patch_size: int, num_classes: int,
                 embed_dims: int, num_heads: int, mlp_ratio: float, depths: int):
        super().__init__(T=T, in_channels=in_channels, img_size_h=img_size, img_size_w=img_size,
                         patch_size=patch_size, num_classes=num_classes, embed_dims=embed_dims,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, depths=depths)
        self.patch_embed = OfficialSpikformerStem(img_size, patch_size, in_channels, embed_dims)
        self.head = nn.Linear(embed_dims, num_classes)  # applied once, to the time-averaged features
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(self._to_sequence(x))  # [T, N, C]
        return self.head(features.mean(0))


class OfficialSpikeDrivenTransformer(SpikeDrivenTransformer):
    """Spike-driven Transformer v1 with the official head: classify every time step, then average."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self._to_sequence(x))
        for block in self.blocks:
            x = block(x)
        x = self.head_lif(x.flatten(3).mean(-1))
        return self.head(x).mean(0)
