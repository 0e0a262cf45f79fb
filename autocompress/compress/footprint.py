"""Memory footprint of a model: the bytes inference needs."""

from __future__ import annotations

from torch import nn


def baseline_footprint(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at its stored dtype (shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total
