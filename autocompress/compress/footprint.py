"""Memory footprint of a model: the bytes inference needs.

Every parameter and buffer counts at its stored dtype, except the weights of
quantized layers, which count as their bit-packed integers (``ceil(n * bits / 8)``
bytes) plus one float32 scale per output channel. This is exactly the payload of an
exported file (:mod:`autocompress.compress.export`), which adds only its header.
"""

from __future__ import annotations

from torch import nn

from autocompress.compress.quantization import packed_bytes


def baseline_footprint(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at its stored dtype (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def tensor_footprints(model) -> dict[str, int]:
    """Bytes per state-dict entry of an SViT's network, quantized weights packed."""
    bits = model.compression.bits if getattr(model, "compression", None) else {}
    sizes = {}
    for key, tensor in model.net.state_dict().items():
        layer, _, name = key.rpartition(".")
        if name == "weight" and layer in bits:
            sizes[key] = packed_bytes(tensor.numel(), bits[layer]) + tensor.shape[0] * 4
        else:
            sizes[key] = tensor.numel() * tensor.element_size()
    return sizes


def footprint(model) -> int:
    """Bytes inference needs for an SViT, compressed or not."""
    return sum(tensor_footprints(model).values())
