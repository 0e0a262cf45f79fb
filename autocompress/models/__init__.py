"""SViT model families (SpikingJelly 2.0.0) and custom factories, and checkpoints."""

from autocompress.models._registry import create_model, family_names, import_factory, parameter_count, register_family
from autocompress.models.checkpoint import load_checkpoint, read_state_dict
from autocompress.models.svit import SViT

__all__ = [
    "SViT",
    "create_model",
    "family_names",
    "import_factory",
    "load_checkpoint",
    "parameter_count",
    "read_state_dict",
    "register_family",
]
