"""autocompress: constraint-driven compression search for Spiking Vision Transformers."""

__version__ = "0.1.0"
