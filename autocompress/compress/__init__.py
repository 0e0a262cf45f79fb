"""What a candidate does to a model: channel groups, pruning, quantization, footprint, export.

Nothing here searches; the search calls :func:`compress_model` with a candidate's
per-unit choices.
"""

from autocompress.compress.candidate import CompressionRecord, compress_model
from autocompress.compress.export import export_compressed, header_bound, load_compressed
from autocompress.compress.footprint import baseline_footprint, footprint, memory_saving, tensor_footprints
from autocompress.compress.groups import ChannelGroup, GroupReport, Member, find_channel_groups
from autocompress.compress.pruning import compare_prune_and_mask, mask_network, prune_model, verify_group
from autocompress.compress.quantization import QUANTIZED_BITS, quantizable_layers

__all__ = [
    "QUANTIZED_BITS",
    "ChannelGroup",
    "CompressionRecord",
    "GroupReport",
    "Member",
    "baseline_footprint",
    "compare_prune_and_mask",
    "compress_model",
    "export_compressed",
    "find_channel_groups",
    "footprint",
    "header_bound",
    "load_compressed",
    "mask_network",
    "memory_saving",
    "prune_model",
    "quantizable_layers",
    "tensor_footprints",
    "verify_group",
]
