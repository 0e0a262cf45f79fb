"""Official checkpoint layouts, recognised and converted to autocompress's families.

Three layouts come from the authors' code, as their ``train.py`` saves them (timm's
checkpoint saver, the model's own key names):

* ``spikformer-imagenet`` (ZK-Zhou/spikformer ``imagenet/model.py``): ``block.i``,
  stem ``patch_embed.proj_conv{,1,2,3}``/``proj_bn*`` and ``rpe_*``, separate
  ``attn.{q,k,v}_conv`` (Conv1d) with ``_bn``, ``attn.proj_conv`` with a bias,
  ``mlp.fc{1,2}_conv`` as 1x1 Conv2d with biases, unused ``norm1``/``norm2``;
* ``spikformer-cifar`` (``cifar10/model.py``, also used for CIFAR-100): the same with
  ``nn.Linear`` layers (``q_linear``, ``proj_linear``, ``fc1_linear`` ..., all with
  biases) and BatchNorm1d over channels;
* ``sdt-v1`` (BICLab/Spike-Driven-Transformer ``module/``): ``block.i``, stem
  ``proj_conv{,1,2,3}``, ``attn.{q,k,v}_conv`` (1x1 Conv2d) and an unused
  ``talking_heads`` convolution, ``mlp.fc{1,2}_conv``.

Conversion renames, concatenates q/k/v into SpikingJelly's fused convolution, folds a
layer's bias into the batch norm that follows it (``BN(Wx + b)`` has running mean
``mu``; ``BN'(Wx)`` with running mean ``mu - b`` is the same function), gives the
bias-free official stem convolutions zero biases where SpikingJelly's have them, and
drops (and lists) the parameters the official forward never uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# layout -> the family whose network computes what the layout's official code computes
FAMILY_OF_LAYOUT = {
    "spikformer-imagenet": "spikformer_imagenet",
    "spikformer-cifar": "spikformer_cifar",
    "sdt-v1": "spike_driven_transformer",
}
DESCRIPTION = {
    "spikformer-imagenet": "an official Spikformer ImageNet checkpoint (ZK-Zhou/spikformer, imagenet/model.py)",
    "spikformer-cifar": "an official Spikformer CIFAR checkpoint (ZK-Zhou/spikformer, cifar10/model.py)",
    "sdt-v1": "an official Spike-driven Transformer v1 checkpoint (BICLab/Spike-Driven-Transformer)",
}


class ConversionError(ValueError):
    """The state dict claims an official layout but does not hold what that layout needs."""


@dataclass
class Conversion:
    layout: str
    state: dict[str, torch.Tensor]
    renamed: int = 0
    fused: int = 0  # q/k/v triples concatenated
    folded: list[str] = field(default_factory=list)  # biases folded into batch norms
    zero_filled: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What was done, in plain words (one line)."""
        parts = [f"converted {DESCRIPTION[self.layout]}: {self.renamed} tensors mapped to autocompress's names"]
        if self.fused:
            parts.append(f"q/k/v fused in {self.fused} blocks")
        if self.folded:
            parts.append(f"{len(self.folded)} biases folded into the batch norm after them")
        if self.zero_filled:
            parts.append(f"{len(self.zero_filled)} bias-free stem convolutions given zero biases")
        if self.dropped:
            parts.append(f"{len(self.dropped)} tensors the official forward never uses dropped "
                         f"({_patterns(self.dropped)})")
        return "; ".join(parts)


def _patterns(keys: list[str]) -> str:
    """``block.*.norm1.weight, ...``: dropped keys with block numbers collapsed."""
    seen = dict.fromkeys(re.sub(r"^block\.\d+\.", "block.*.", key) for key in keys)
    return ", ".join(seen)


def detect_layout(state: dict[str, torch.Tensor]) -> str | None:
    """The official layout of a state dict, or None (autocompress's own names, or unknown)."""
    q_conv = state.get("block.0.attn.q_conv.weight")
    if "block.0.attn.q_linear.weight" in state:
        return "spikformer-cifar"
    if q_conv is not None and q_conv.ndim == 3:
        return "spikformer-imagenet"
    if q_conv is not None and q_conv.ndim == 4:
        return "sdt-v1"
    return None


def block_count(state: dict[str, torch.Tensor], prefix: str = "block") -> int:
    indices = {int(m.group(1)) for key in state for m in [re.match(rf"^{prefix}\.(\d+)\.", key)] if m}
    return max(indices) + 1 if indices else 0


class _Converter:
    def __init__(self, state: dict[str, torch.Tensor], layout: str):
        self.source = dict(state)
        self.used: set[str] = set()
        self.result = Conversion(layout=layout, state={})

    def take(self, key: str) -> torch.Tensor:
        if key not in self.source:
            raise ConversionError(f"it has no '{key}', which {DESCRIPTION[self.result.layout]} holds")
        self.used.add(key)
        return self.source[key]

    def maybe(self, key: str) -> torch.Tensor | None:
        return self.take(key) if key in self.source else None

    def put(self, key: str, value: torch.Tensor) -> None:
        self.result.state[key] = value
        self.result.renamed += 1

    def batch_norm(self, source: str) -> dict[str, torch.Tensor]:
        stats = {name: self.take(f"{source}.{name}") for name in BN_KEYS[:4]}
        counter = self.maybe(f"{source}.num_batches_tracked")  # absent in some exports; unused in evaluation
        stats["num_batches_tracked"] = counter if counter is not None else torch.tensor(0)
        return stats

    def folded(self, layer: str, bn: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``layer``'s weight and the statistics of ``bn`` after it, the layer's bias folded in."""
        weight, stats = self.take(f"{layer}.weight"), self.batch_norm(bn)
        bias = self.maybe(f"{layer}.bias")
        if bias is not None:
            stats["running_mean"] = fold_bias(stats["running_mean"], bias)
            self.result.folded.append(f"{layer}.bias")
        return weight, stats

    def layer_bn(self, layer: str, bn: str, target_weight: str, target_bn: str, *, conv1d: bool = False) -> None:
        """``layer`` then ``bn``, the bias folded; ``conv1d``: a Linear [out, in] or 1x1 convolution
        becomes SpikingJelly's Conv1d weight [out, in, 1]."""
        weight, stats = self.folded(layer, bn)
        self.put(target_weight, as_conv1d(weight) if conv1d else weight)
        for name, value in stats.items():
            self.put(f"{target_bn}.{name}", value)

    def finish(self) -> Conversion:
        self.result.dropped = [key for key in self.source if key not in self.used]
        return self.result


def as_conv1d(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], weight.shape[1], 1)


def fold_bias(running_mean: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The running mean of a batch norm that takes ``Wx`` where it took ``Wx + bias``."""
    return (running_mean.double() - bias.double()).to(running_mean.dtype)


def _unused(key: str, layout: str) -> bool:
    if layout.startswith("spikformer"):
        return bool(re.match(r"^block\.\d+\.norm[12]\.", key))
    return bool(re.match(r"^block\.\d+\.attn\.talking_heads\.", key))


def _convert_spikformer(state: dict[str, torch.Tensor], layout: str) -> Conversion:
    c = _Converter(state, layout)
    for i, suffix in enumerate(["", "1", "2", "3"]):
        c.layer_bn(f"patch_embed.proj_conv{suffix}", f"patch_embed.proj_bn{suffix}",
                   f"patch_embed.stages.{i}.conv_bn.block.0.weight", f"patch_embed.stages.{i}.conv_bn.block.1")
    c.layer_bn("patch_embed.rpe_conv", "patch_embed.rpe_bn", "patch_embed.positional_encoding.conv_bn.block.0.weight",
               "patch_embed.positional_encoding.conv_bn.block.1")
    kind = "linear" if layout == "spikformer-cifar" else "conv"
    for b in range(block_count(state)):
        src, dst = f"block.{b}", f"blocks.{b}"
        weights, norms = [], {name: [] for name in BN_KEYS}
        for part in ("q", "k", "v"):
            weight, stats = c.folded(f"{src}.attn.{part}_{kind}", f"{src}.attn.{part}_bn")
            weights.append(as_conv1d(weight))
            for name, value in stats.items():
                norms[name].append(value)
        c.put(f"{dst}.attn.qkv_conv_bn.0.weight", torch.cat(weights))
        for name, values in norms.items():
            c.put(f"{dst}.attn.qkv_conv_bn.1.{name}",
                  values[0] if name == "num_batches_tracked" else torch.cat(values))
        c.result.fused += 1
        c.layer_bn(f"{src}.attn.proj_{kind}", f"{src}.attn.proj_bn", f"{dst}.attn.proj_conv_bn.0.weight",
                   f"{dst}.attn.proj_conv_bn.1", conv1d=True)
        for n in (1, 2):
            c.layer_bn(f"{src}.mlp.fc{n}_{kind}", f"{src}.mlp.fc{n}_bn", f"{dst}.mlp.fc{n}.0.weight",
                       f"{dst}.mlp.fc{n}.1", conv1d=True)
    c.put("head.weight", c.take("head.weight"))
    c.put("head.bias", c.take("head.bias"))
    return _check_leftovers(c)


def _convert_sdt(state: dict[str, torch.Tensor]) -> Conversion:
    c = _Converter(state, "sdt-v1")
    stem = [("", "stages.0"), ("1", "stages.1"), ("2", "stages.2"), ("3", "final_stage")]
    for suffix, target in stem:
        weight = c.take(f"patch_embed.proj_conv{suffix}.weight")
        c.put(f"patch_embed.{target}.0.weight", weight)
        bias = c.maybe(f"patch_embed.proj_conv{suffix}.bias")
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype)
            c.result.zero_filled.append(f"patch_embed.proj_conv{suffix}")
        c.put(f"patch_embed.{target}.0.bias", bias)
        for name, value in c.batch_norm(f"patch_embed.proj_bn{suffix}").items():
            c.put(f"patch_embed.{target}.1.{name}", value)
    c.put("patch_embed.rpe_conv.weight", c.take("patch_embed.rpe_conv.weight"))
    for name, value in c.batch_norm("patch_embed.rpe_bn").items():
        c.put(f"patch_embed.rpe_bn.{name}", value)
    renames = {"attn.q_conv": "attn.q_conv", "attn.k_conv": "attn.k_conv", "attn.v_conv": "attn.v_conv",
               "attn.q_bn": "attn.q_bn", "attn.k_bn": "attn.k_bn", "attn.v_bn": "attn.v_bn",
               "attn.proj_conv": "attn.proj_conv", "attn.proj_bn": "attn.proj_bn",
               "mlp.fc1_conv": "mlp.fc1", "mlp.fc1_bn": "mlp.bn1", "mlp.fc2_conv": "mlp.fc2", "mlp.fc2_bn": "mlp.bn2"}
    for b in range(block_count(state)):
        for old, new in renames.items():
            prefix = f"block.{b}.{old}."
            for key in [k for k in state if k.startswith(prefix)]:
                c.put(f"blocks.{b}.{new}.{key[len(prefix):]}", c.take(key))
    c.put("head.weight", c.take("head.weight"))
    c.put("head.bias", c.take("head.bias"))
    return _check_leftovers(c)


def _check_leftovers(c: _Converter) -> Conversion:
    result = c.finish()
    unknown = [key for key in result.dropped if not _unused(key, result.layout)]
    if unknown:
        plif = [key for key in unknown if re.search(r"lif\d*\.w$", key)]
        if plif:
            raise ConversionError(
                f"it holds parametric-LIF time constants ({', '.join(plif[:3])}): a checkpoint trained with "
                "--spike-mode plif, which autocompress's families do not build (they use LIF neurons)")
        raise ConversionError(f"it holds tensors {DESCRIPTION[result.layout]} does not have: "
                              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return result


def convert(state: dict[str, torch.Tensor], layout: str) -> Conversion:
    """``state`` (official ``layout``) as the state dict of ``FAMILY_OF_LAYOUT[layout]``'s network."""
    if layout == "sdt-v1":
        return _convert_sdt(state)
    return _convert_spikformer(state, layout)


# ------------------------------------------------------------------------ what a checkpoint is

# Heads have no weights, so a file without saved training arguments does not record them: the
# official Spikformer code fixes 8 for 8-512 and its CIFAR config 12 for 384; SDT's configs use 8.
_SPIKFORMER_HEADS = {384: 12, 512: 8}


@dataclass
class Variant:
    """What a checkpoint's tensors (and its saved training arguments) say about its model."""

    layout: str  # an official layout, or "autocompress" for a family's own names
    family: str | None
    args: dict[str, Any]
    from_args: list[str]  # model arguments read from the checkpoint's saved training arguments
    assumed: list[str]  # model arguments the tensors do not determine, set to the published default
    name: str  # e.g. Spikformer-8-512


def describe_variant(state: dict[str, torch.Tensor], train_args: dict[str, Any] | None) -> Variant:
    """The family and ``model.args`` a checkpoint fits. Raises ValueError for unknown layouts."""
    layout = detect_layout(state)
    own = layout is None
    if own:
        layout = _own_layout(state)
    train_args = train_args or {}
    depth = block_count(state) or block_count(state, "blocks")
    stem0 = next((state[k] for k in ("patch_embed.proj_conv.weight", "patch_embed.stages.0.0.weight",
                                     "patch_embed.stages.0.conv_bn.block.0.weight") if k in state), None)
    fc1 = next((state[k] for k in ("block.0.mlp.fc1_conv.weight", "block.0.mlp.fc1_linear.weight",
                                   "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.0.weight") if k in state), None)
    head = state.get("head.weight")
    if stem0 is None or fc1 is None or head is None or not depth:
        raise ValueError("its tensors do not form a Spikformer or Spike-driven Transformer (no stem, MLP or head found)")
    dims, classes = head.shape[1], head.shape[0]
    args: dict[str, Any] = {"in_channels": int(stem0.shape[1]), "num_classes": int(classes),
                            "embed_dims": int(dims), "depths": int(depth),
                            "mlp_ratio": float(fc1.shape[0] / dims)}
    from_args, assumed = [], []
    cifar_like = layout == "spikformer-cifar" or classes in (10, 100)
    saved = {"T": ("time_steps", "time_step"), "num_heads": ("num_heads",), "image_size": ("img_size",)}
    if layout == "sdt-v1":
        saved["pooling_stat"] = ("pooling_stat",)
    heads = 8 if layout == "sdt-v1" else _SPIKFORMER_HEADS.get(dims, 8)
    defaults = {"T": 4, "num_heads": heads, "image_size": 32 if cifar_like else 224,
                "pooling_stat": "0011" if cifar_like else "1111"}
    for arg, names in saved.items():
        value = next((train_args[n] for n in names if train_args.get(n) is not None), None)
        if value is not None:
            args[arg] = value
            from_args.append(arg)
        elif arg == "T" and layout == "spikformer-imagenet":
            args[arg] = 4  # the official ImageNet forward repeats the image 4 times, whatever it was trained with
        else:
            args[arg] = defaults[arg]
            assumed.append(arg)
    family = FAMILY_OF_LAYOUT.get(layout)  # None for a Spikformer in autocompress's names: two families share them
    prefix = "SDT" if layout == "sdt-v1" else "Spikformer"
    return Variant(layout="autocompress" if own else layout, family=family, args=args, from_args=from_args,
                   assumed=assumed, name=f"{prefix}-{depth}-{dims}")


def _own_layout(state: dict[str, torch.Tensor]) -> str:
    if "patch_embed.final_stage.0.weight" in state:
        return "sdt-v1"
    if "patch_embed.stages.0.conv_bn.block.0.weight" in state:
        return "spikformer-own"
    raise ValueError("its key names are neither an official layout (Spikformer ImageNet/CIFAR, Spike-driven "
                     "Transformer v1) nor autocompress's families' own")
