"""Reference SViTs that autocompress trains itself on embedded data (the demo's model);
their recipes are :mod:`autocompress.recipes`."""

from autocompress.reference.train import ensure_reference, reference_metadata, reference_path, train_reference

__all__ = ["ensure_reference", "reference_metadata", "reference_path", "train_reference"]
