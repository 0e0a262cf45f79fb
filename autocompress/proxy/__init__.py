"""The membrane-potential-drift proxy and the gate built on it."""

from autocompress.proxy.drift import kept_channels, layer_drifts, membrane_drift, record_potentials
from autocompress.proxy.gate import Gate, GateDecision

__all__ = ["Gate", "GateDecision", "kept_channels", "layer_drifts", "membrane_drift", "record_potentials"]
