"""What a candidate does to a model: pruning, quantization, footprint, export."""

from autocompress.compress.footprint import baseline_footprint

__all__ = ["baseline_footprint"]
