"""What a candidate does to a model: channel groups (the data model, their discovery and
verification), pruning, quantization, footprint, export. Nothing here searches; the
engine calls :func:`compress_model` with a candidate's per-unit choices.
"""

from autocompress.compress.candidate import CompressionRecord, compress_model
from autocompress.compress.discovery import find_channel_groups
from autocompress.compress.export import export_compressed, header_bound, load_compressed
from autocompress.compress.folding import foldable_batchnorms, fold_batchnorms
from autocompress.compress.footprint import baseline_footprint, footprint, tensor_footprints
from autocompress.compress.groups import ChannelGroup, GroupReport, Member, channel_view
from autocompress.compress.quantization import quantizable_layers

__all__ = [
    "foldable_batchnorms",
    "fold_batchnorms",
    "ChannelGroup",
    "CompressionRecord",
    "GroupReport",
    "Member",
    "baseline_footprint",
    "channel_view",
    "compress_model",
    "export_compressed",
    "find_channel_groups",
    "footprint",
    "header_bound",
    "load_compressed",
    "quantizable_layers",
    "tensor_footprints",
]
