"""A uniform face for every SViT: images in, class logits out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autocompress.models._spikingjelly import BaseNode, functional


class SViT(nn.Module):
    """Wraps a SpikingJelly (or custom) spiking vision transformer.

    ``forward`` takes images ``[N, C, H, W]`` and returns class logits ``[N, K]``
    averaged over the time steps; the neurons' state is reset before and after each
    call, so batches never leak membrane potential into each other. ``net`` is the
    wrapped model: checkpoints hold its state dict (SpikingJelly's own key names).
    """

    def __init__(self, net: nn.Module, family: str, args: dict[str, Any], time_steps: int | None = None,
                 factory: str | None = None):
        super().__init__()
        self.net = net
        self.family = family
        self.args = dict(args)
        self.time_steps = time_steps  # repeat images over T here (custom models that expect [T, N, ...])
        self.factory = factory  # custom models: "package.module:function"
        self.compression = None  # a CompressionRecord once pruned or quantized

    def model_spec(self) -> dict[str, Any]:
        """The spec's ``model`` section that rebuilds this architecture (before compression)."""
        spec: dict[str, Any] = {"family": self.family, "args": dict(self.args)}
        if self.family == "custom":
            spec.update(factory=self.factory, time_steps=self.time_steps)
        return spec

    def spiking_neurons(self) -> list[tuple[str, BaseNode]]:
        """``(name, neuron)`` for every SpikingJelly neuron layer, in module order."""
        return [(name, module) for name, module in self.net.named_modules() if isinstance(module, BaseNode)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self.net)
        x = images
        if self.time_steps is not None:
            x = images.unsqueeze(0).repeat(self.time_steps, *([1] * images.ndim))
        out = self.net(x)
        functional.reset_net(self.net)
        if out.ndim == 3:  # [T, N, K] -> mean over time steps
            out = out.mean(0)
        if out.ndim != 2 or out.shape[0] != images.shape[0]:
            raise RuntimeError(
                f"the {self.family} model returned shape {tuple(out.shape)} for a batch of {images.shape[0]}; "
                "expected [N, classes] or [T, N, classes]"
            )
        return out
