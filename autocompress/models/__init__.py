"""SViT model families (the official Spikformer and Spike-driven Transformer, SpikingJelly 2.0.0's
Spikformer), custom factories, and checkpoints."""

from autocompress.models._spikingjelly import BaseNode
from autocompress.models._registry import (
    create_model,
    family_converter,
    family_names,
    import_factory,
    parameter_count,
    register_family,
    registered_block_rules,
)
from autocompress.models.checkpoint import inspect_checkpoint, load_checkpoint, read_checkpoint, read_state_dict
from autocompress.models.svit import SViT
from autocompress.vocabulary import canonical_family

__all__ = [
    "BaseNode",
    "SViT",
    "canonical_family",
    "create_model",
    "family_converter",
    "family_names",
    "import_factory",
    "inspect_checkpoint",
    "load_checkpoint",
    "parameter_count",
    "read_checkpoint",
    "read_state_dict",
    "register_family",
    "registered_block_rules",
]
