"""Quantization-aware training of a compressed candidate (recovery fine-tuning).

Each quantized layer's weight is re-parametrized (``torch.nn.utils.parametrize``): the
float weight is the trained ("latent") value, and every forward pass uses its
per-channel quantization, with the straight-through estimator for the gradient
(``w + (Q(w) - w).detach()``: the rounding passes the gradient unchanged).

The scales are recomputed from the latent weights at every forward pass, by the same
quantizer the search measured the candidate with (max-abs, or MSE clipping when the
spec's ``compression.mse_clipping`` is on), not learned: the exported file stores the
scale that the weights themselves give (:mod:`autocompress.compress.export`), so a
tuned candidate keeps exactly the search's grid, format and footprint. Learned scales
(LSQ) would add a state the export does not carry and help mostly at 2 bits; they are
not built.

Structure is left alone: pruned channels stay removed, every layer keeps its bit-width,
folded BatchNorms stay folded (the folded layer's weight and bias are what is trained
and quantized, as deployed). BatchNorms that were not folded keep their running
statistics (:func:`train_mode` puts them in eval mode) while their affine parameters
train: fine-tuning batches are small and the statistics were already re-estimated on
the compressed model by the search (``compression.recalibrate_batchnorm``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress.quantization import dequantize_tensor, fake_quantize, quantize_tensor


class STEQuantizer(nn.Module):
    """The fake-quantized weight with a straight-through gradient."""

    def __init__(self, bits: int, clip: bool):
        super().__init__()
        self.bits, self.clip = bits, clip

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_tensor(weight, self.bits, clip=self.clip)
        quantized = dequantize_tensor(q, scale.to(weight.device)).to(weight.dtype)
        return weight + (quantized - weight).detach()


def prepare_qat(model, *, clip: bool) -> None:
    """Put the quantizers of ``model.compression.bits`` into the forward pass, in place."""
    record = model.compression
    modules = dict(model.net.named_modules())
    for path, bits in (record.bits if record else {}).items():
        module = modules[path]
        if not parametrize.is_parametrized(module, "weight"):
            parametrize.register_parametrization(module, "weight", STEQuantizer(bits, clip))


def freeze_qat(model) -> None:
    """Replace each quantizer by its output (the weight on its grid), in place: the
    plain module structure :func:`~autocompress.compress.export.export_compressed` writes."""
    record = model.compression
    modules = dict(model.net.named_modules())
    for path in (record.bits if record else {}):
        module = modules[path]
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    if record and record.bits:
        fake_quantize(model.net, record.bits)  # idempotent on grid values: the scale the export re-derives


def train_mode(model) -> None:
    """Training mode with every BatchNorm's running statistics frozen (see the module doc)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
