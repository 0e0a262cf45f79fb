"""The membrane-potential-drift proxy (the gate that acts on it is :mod:`autocompress.search.gate`)."""

from autocompress.proxy.drift import kept_channels, layer_drifts, membrane_drift, record_potentials

__all__ = ["kept_channels", "layer_drifts", "membrane_drift", "record_potentials"]
