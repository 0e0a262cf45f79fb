"""Optional fixed-point quantization of the neurons' membrane potential (off by default).

On neuromorphic and embedded targets the membrane potential is state stored between
time steps, often in a few bits. With ``neuron_bits`` b, every neuron with a threshold
keeps its potential on a signed b-bit fixed-point grid spanning [-2*theta, 2*theta)
(step 4*theta / 2^b), so the threshold theta and a reset to 0 lie exactly on the grid:
after each time step (charge, fire, reset, all SpikingJelly's own single-step
dynamics), v is rounded to the grid and clamped to its range. This changes the
accuracy the search measures, not the stored model's footprint: the potential is
run-time state, not a weight.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from autocompress.models import BaseNode

NEURON_BITS = (4, 5, 6, 7, 8, 12, 16)


def quantize_membrane(v: torch.Tensor, threshold: float, bits: int) -> torch.Tensor:
    step = 4.0 * threshold / 2**bits
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(v / step), low, high) * step


def _stepwise_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
    spikes, potentials = [], []
    for x in x_seq:
        spikes.append(self.single_step_forward(x))
        self.v = quantize_membrane(self.v, float(self.v_threshold), self._membrane_bits)
        potentials.append(self.v)
    if self.store_v_seq:
        self.v_seq = torch.stack(potentials)
    return torch.stack(spikes)


def quantize_neurons(net: nn.Module, bits: int | None) -> int:
    """Put every thresholded multi-step neuron of ``net`` on a ``bits``-bit membrane grid,
    in place; return how many neurons were changed. ``None`` or 32 changes nothing."""
    if bits is None or bits == 32:
        return 0
    if bits not in NEURON_BITS:
        raise ValueError(f"membrane bit-width {bits} is not supported; use one of {NEURON_BITS} or 32")
    changed = 0
    for module in net.modules():
        if isinstance(module, BaseNode) and hasattr(module, "v_threshold") and getattr(module, "step_mode", "m") == "m":
            module._membrane_bits = bits
            module.forward = types.MethodType(_stepwise_forward, module)
            changed += 1
    return changed
