"""The membrane-potential-drift proxy (the gate that acts on it is :mod:`autocompress.searching.gate`)."""

from autocompress.proxy.drift import (
    ReferencePotentials,
    kept_channels,
    layer_drifts,
    membrane_drift,
    record_potentials,
)

__all__ = ["ReferencePotentials", "kept_channels", "layer_drifts", "membrane_drift", "record_potentials"]
