"""Export a compressed SViT to one file, and load it back. No pickle anywhere.

The file is a safetensors file:

- metadata (JSON strings in the header): the format tag, the model's spec section
  (family, args, and for ``custom`` the factory) and the compression record (channels
  kept per head of every pruned group, bits per quantized layer, layers given a bias
  by VBP); packed weights take their shapes from the rebuilt architecture;
- tensors: ``KEY:q`` (the bit-packed integers, uint8) and ``KEY:scale`` (float32 per
  output channel) for each quantized weight ``KEY``; every other state-dict entry
  as it is.

So the file's size is the model's :func:`~autocompress.compress.footprint.footprint`
plus the header (8 bytes of length and the JSON header). The header grows with the
number of tensors, about 100 bytes each; :func:`header_bound` states the bound the
tests hold it to. :func:`load_compressed` rebuilds the architecture from the metadata
(the library and, for custom models, the factory must be importable), then loads the
tensors; its outputs equal the fake-quantized model's exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import TypeAdapter

from autocompress.version import __version__
from autocompress.atomic import atomic_write
from autocompress.compress.candidate import CompressionRecord
from autocompress.compress.folding import set_module
from autocompress.compress.footprint import footprint
from autocompress.compress.neurons import quantize_neurons
from autocompress.compress.quantization import dequantize_tensor, pack, quantize_tensor, unpack
from autocompress.errors import CheckpointError

FORMAT = "autocompress-packed-v1"


def header_bound(footprint_bytes: int) -> int:
    """Largest allowed ``file size - footprint``: 1 % of the footprint or 16 KiB."""
    return max(footprint_bytes // 100, 16 * 1024)



def export_compressed(model, path: str | os.PathLike) -> int:
    """Write ``model`` (an SViT, compressed or not) to ``path``; return the file's size."""
    from safetensors.torch import save_file

    record = model.compression or CompressionRecord()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in model.net.state_dict().items():
        layer, _, name = key.rpartition(".")
        if name == "weight" and layer in record.bits:
            q, scale = quantize_tensor(tensor, record.bits[layer])
            tensors[f"{key}:q"] = pack(q, record.bits[layer])
            tensors[f"{key}:scale"] = scale.contiguous()
        else:
            tensors[key] = tensor.detach().cpu().contiguous()
    metadata = {
        "format": FORMAT,
        "autocompress": __version__,
        "model": json.dumps(model.model_spec()),
        "compression": json.dumps(record.to_dict()),
        "footprint_bytes": str(footprint(model)),
    }
    path = atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path.stat().st_size


def load_compressed(path: str | os.PathLike):
    """Rebuild the compressed SViT stored at ``path`` by :func:`export_compressed`."""
    with torch.inference_mode(False):  # build normal tensors even when called under inference mode
        return _load_compressed(Path(path))


def _load_compressed(path: Path):
    from safetensors import SafetensorError, safe_open

    from autocompress.compress.discovery import find_channel_groups
    from autocompress.compress.pruning import prune_network
    from autocompress.models import create_model
    from autocompress.spec import ModelSpec

    if not path.is_file():
        raise CheckpointError(f"compressed model {path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"compressed model {path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"compressed model {path}: not an autocompress export (format {metadata.get('format')!r})")
    record = CompressionRecord(**json.loads(metadata["compression"]))
    model = create_model(TypeAdapter(ModelSpec).validate_python(json.loads(metadata["model"])))

    if record.kept_per_head:
        example = torch.zeros(2, *record.input_shape) if record.input_shape else None
        groups = find_channel_groups(model, verify=False, example=example).by_name()
        missing = sorted(set(record.kept_per_head) - set(groups))
        if missing:
            raise CheckpointError(f"compressed model {path}: the model has no channel groups {missing}")
        # the shapes are what matters here: drop the last channels of each head
        removed = {
            name: [h * groups[name].channels_per_head + i
                   for h in range(groups[name].heads)
                   for i in range(kept, groups[name].channels_per_head)]
            for name, kept in record.kept_per_head.items()
        }
        prune_network(model.net, groups, removed)
    for norm in record.folded:  # folded into the layer before it when exported
        set_module(model.net, norm, torch.nn.Identity())
    modules = dict(model.net.named_modules())
    for layer in record.biased:
        conv = modules[layer]
        if conv.bias is None:
            conv.bias = torch.nn.Parameter(torch.zeros(conv.weight.shape[0]))

    state = {}
    for key, expected in model.net.state_dict().items():  # packed weights take their shape from the rebuilt model
        layer = key.rpartition(".")[0]
        if f"{key}:q" in tensors:
            q = unpack(tensors.pop(f"{key}:q"), record.bits[layer], tuple(expected.shape))
            state[key] = dequantize_tensor(q, tensors.pop(f"{key}:scale"))
    state.update(tensors)
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"compressed model {path} does not fit its rebuilt architecture: {error}") from None
    quantize_neurons(model.net, record.neuron_bits)
    model.compression = record
    return model.eval()
