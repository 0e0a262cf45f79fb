"""Reference SViTs that autocompress trains itself on embedded data (the demo's model);
their recipes are :mod:`autocompress.recipes`."""

from autocompress.reference.train import (
    available_reference,
    ensure_reference,
    file_sha256,
    reference_metadata,
    reference_path,
    shipped_path,
    train_reference,
)

__all__ = ["available_reference", "ensure_reference", "file_sha256", "reference_metadata", "reference_path",
           "shipped_path", "train_reference"]
