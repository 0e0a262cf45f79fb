"""Reference SViTs that autocompress trains itself on embedded data (the demo's model);
their recipes are :mod:`autocompress.recipes`."""

from autocompress.reference.train import ensure_reference, reference_path

__all__ = ["ensure_reference", "reference_path"]
