"""Import SpikingJelly quietly.

PyTorch logs a warning per Triton-kernel lookup when Triton is absent (CPU
installs); SpikingJelly triggers it at import. It says nothing actionable to an
autocompress user, so it is silenced here, once.
"""

from __future__ import annotations

import logging

logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

from spikingjelly.activation_based import functional, neuron  # noqa: E402
from spikingjelly.activation_based.neuron import BaseNode  # noqa: E402

__all__ = ["BaseNode", "functional", "neuron"]
