"""autocompress: constraint-driven compression search for Spiking Vision Transformers."""

from autocompress.version import __version__


def load(path):
    """Load a model written by ``autocompress export`` (safetensors; weights only, no pickle)."""
    from autocompress.compress import load_compressed

    return load_compressed(path)


__all__ = ["__version__", "load"]
