"""Post-training weight quantization: symmetric, per output channel, uniform.

A weight tensor at ``bits`` b (2..8 or 16) is stored as integers q in
[-(2^(b-1)-1), 2^(b-1)-1] and one float32 scale per output channel,
``scale_c = max|W_c| / (2^(b-1)-1)`` (1 where a channel is all zero), and read back
as ``q * scale``. Evaluation uses exactly these dequantized ("fake-quantized")
weights, so the accuracy measured is the accuracy of the exported packed model.
32 bits means unquantized. Biases, batch norms and neuron parameters stay float32.

Integers are bit-packed into a little-endian bit stream of ``ceil(n * b / 8)`` bytes
(value ``q + 2^(b-1) - 1`` in b bits).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from autocompress.vocabulary import FULL_PRECISION, QUANTIZED_BITS


def quantizable_layers(net: nn.Module) -> dict[str, int]:
    """``{module path: weight elements}`` of every convolution and linear layer."""
    return {
        path: module.weight.numel()
        for path, module in net.named_modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }


def check_bits(bits: int) -> None:
    if bits != FULL_PRECISION and bits not in QUANTIZED_BITS:
        raise ValueError(f"bit-width {bits} is not supported; use one of {QUANTIZED_BITS} or 32")


CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(25))  # 1.0 down to 0.4


def quantize_tensor(weight: torch.Tensor, bits: int, *, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: int32 integers shaped like ``weight`` and float32 scales [out].
    With ``clip``, each channel's range is the fraction of its largest magnitude (from
    :data:`CLIP_RATIOS`) that minimises the channel's squared rounding error (MSE
    clipping): at 2-4 bits, a few outliers otherwise leave most weights on one or two
    levels. Re-quantizing clipped weights gives back the same integers and scales."""
    check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    top = flat.abs().amax(1)
    scale = top / qmax
    if clip:
        best = torch.full_like(top, float("inf"))
        chosen = scale.clone()
        for ratio in CLIP_RATIOS:
            trial = torch.where(top > 0, top * ratio / qmax, torch.ones_like(top))
            error = ((torch.clamp(torch.round(flat / trial[:, None]), -qmax, qmax) * trial[:, None] - flat) ** 2).sum(1)
            better = error < best
            best = torch.where(better, error, best)
            chosen = torch.where(better, trial, chosen)
        scale = chosen
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax).to(torch.int32)
    return q.reshape(weight.shape), scale


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.view(-1, *([1] * (q.ndim - 1)))


@torch.no_grad()
def fake_quantize(net: nn.Module, bits: dict[str, int], *, clip: bool = False) -> None:
    """Replace each named layer's weight by its dequantized value, in place."""
    modules = dict(net.named_modules())
    for path, b in bits.items():
        if b == FULL_PRECISION:
            continue
        module = modules[path]
        q, scale = quantize_tensor(module.weight, b, clip=clip)
        module.weight.copy_(dequantize_tensor(q, scale).to(module.weight.dtype))


def packed_bytes(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Bit-pack integers of a ``bits``-bit quantized tensor into a uint8 tensor."""
    offset = 2 ** (bits - 1) - 1
    values = (q.reshape(-1).numpy().astype(np.int64) + offset).astype(np.uint32)
    if bits == 8:
        return torch.from_numpy(values.astype(np.uint8))
    if bits == 16:
        return torch.from_numpy(values.astype("<u2").view(np.uint8).copy())
    bit_planes = ((values[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(bit_planes.reshape(-1), bitorder="little"))


def unpack(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack`: int32 integers of ``shape``."""
    offset = 2 ** (bits - 1) - 1
    count = math.prod(shape)
    raw = packed.numpy()
    if bits == 8:
        values = raw.astype(np.int64)
    elif bits == 16:
        values = raw.view("<u2").astype(np.int64)
    else:
        bit_planes = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits).astype(np.int64)
        values = (bit_planes << np.arange(bits, dtype=np.int64)).sum(1)
    return torch.from_numpy(values - offset).to(torch.int32).reshape(shape)


@torch.no_grad()
def correct_biases(model, originals: dict[str, torch.Tensor], images: torch.Tensor, *, batch: int = 64) -> list[str]:
    """Bias correction (Nagel et al., 2019): for each layer of ``originals`` (path ->
    its weight before quantization), subtract the shift its quantization error puts on
    the mean of its output, ``(W_q - W) @ E[x]``, with E[x] the mean of the layer's input
    per input channel over ``images`` run through ``model`` (the compressed, spiking
    model; convolutions: the kernel summed, borders ignored). Returns the layers that
    had no bias and got one. A BatchNorm re-estimated after this absorbs the correction
    of the layer before it; it matters for layers without one (the classifier head)."""
    modules = dict(model.net.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(path):
        def record(module, inputs, _output):
            x = inputs[0].detach().double()
            if isinstance(module, nn.Linear):
                flat = x.reshape(-1, x.shape[-1])
            else:
                flat = x.movedim(1, -1).reshape(-1, x.shape[1])
            sums[path] = sums.get(path, 0) + flat.sum(0)
            counts[path] = counts.get(path, 0) + flat.shape[0]
        return record

    handles = [modules[path].register_forward_hook(hook(path)) for path in originals]
    try:
        model.eval()
        for chunk in images.split(batch):
            model(chunk)
    finally:
        for handle in handles:
            handle.remove()
    biased = []
    for path, original in originals.items():
        if path not in sums:
            continue
        module = modules[path]
        error = (module.weight.detach().double() - original.double()).flatten(2).sum(2) if module.weight.ndim > 2 \
            else module.weight.detach().double() - original.double()
        shift = error @ (sums[path] / counts[path])
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.weight.shape[0], dtype=module.weight.dtype,
                                                   device=module.weight.device))
            biased.append(path)
        module.bias.data -= shift.to(module.bias.dtype)
    return biased

