"""Channel groups of SpikingJelly's SViT blocks: one small rule per block type.

Each rule says which of a block's channels are coupled (the README's "Compression
operators" section): it adds the block's own groups and puts its residual-stream
layers and neurons on the stream, which becomes one group for the whole model. Sizes
come from the modules, so any depth or width works. Module paths are relative to the
wrapped network (``SViT.net``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from autocompress.compress.blocks import join, sj_classes
from autocompress.compress.groups import ChannelGroup, Member, count_group_params

C = (2,)  # neuron outputs [T, N, C, ...]: channels on axis 2
HEADS = (2, 3)  # Spikformer attention output [T, N, heads, head_dim, L]

Carrier = tuple[str, int, tuple[int, ...]]


def _out_channels(module: nn.Module) -> int:
    return module.weight.shape[0]


@dataclass
class _Walk:
    """What the rules build while the model's modules are walked in order."""

    net: nn.Module
    groups: list[ChannelGroup] = field(default_factory=list)
    stream: list[Member] = field(default_factory=list)  # members of the residual stream, shared by every block
    carriers: list[Carrier] = field(default_factory=list)  # neurons on the residual stream

    def add(self, name: str, kind: str, members: list[Member], channels: int, **extra) -> None:
        members_t = tuple(members)
        self.groups.append(ChannelGroup(name=name, kind=kind, channels=channels, members=members_t,
                                        params=count_group_params(self.net, members_t, channels), **extra))


def _spikformer_stem(w: _Walk, module, p: Callable[[str], str]) -> None:
    stages = len(module.stages)
    for i in range(stages - 1):
        conv, bn = p(f"stages.{i}.conv_bn.block.0"), p(f"stages.{i}.conv_bn.block.1")
        w.add(p(f"stages.{i}"), "stem", [Member(conv, "out"), Member(bn, "bn"),
              Member(p(f"stages.{i + 1}.conv_bn.block.0"), "in")],
              _out_channels(module.stages[i].conv_bn.block[0]), activity=(p(f"stages.{i}.neuron"), 0, C),
              carriers=((p(f"stages.{i}.neuron"), 0, C),))
    last = stages - 1
    w.carriers += [(p(f"stages.{last}.neuron"), 0, C), (p("positional_encoding.neuron"), 0, C)]
    w.stream += [Member(p(f"stages.{last}.conv_bn.block.0"), "out"), Member(p(f"stages.{last}.conv_bn.block.1"), "bn"),
                 Member(p("positional_encoding.conv_bn.block.0"), "in"),
                 Member(p("positional_encoding.conv_bn.block.0"), "out"),
                 Member(p("positional_encoding.conv_bn.block.1"), "bn")]


def _sdt_stem(w: _Walk, module, p: Callable[[str], str]) -> None:
    convs = [p(f"stages.{i}.0") for i in range(len(module.stages))] + [p("final_stage.0")]
    for i in range(len(module.stages)):
        w.add(p(f"stages.{i}"), "stem", [Member(convs[i], "out"), Member(p(f"stages.{i}.1"), "bn"),
              Member(convs[i + 1], "in")], _out_channels(module.stages[i][0]),
              activity=(p(f"stages.{i}.2"), 0, C), carriers=((p(f"stages.{i}.2"), 0, C),))
    w.carriers.append((p("final_lif"), 0, C))
    w.stream += [Member(p("final_stage.0"), "out"), Member(p("final_stage.1"), "bn"),
                 Member(p("rpe_conv"), "in"), Member(p("rpe_conv"), "out"), Member(p("rpe_bn"), "bn")]


def _spikformer_mlp(w: _Walk, module, p: Callable[[str], str]) -> None:
    w.add(p("hidden"), "mlp", [Member(p("fc1.0"), "out"), Member(p("fc1.1"), "bn"), Member(p("fc2.0"), "in")],
          _out_channels(module.fc1[0]), activity=(p("neuron1"), 0, C), compensate=p("fc2.0"),
          carriers=((p("neuron1"), 0, C),))
    w.carriers.append((p("neuron2"), 0, C))
    w.stream += [Member(p("fc1.0"), "in"), Member(p("fc2.0"), "out"), Member(p("fc2.1"), "bn")]


def _sdt_mlp(w: _Walk, module, p: Callable[[str], str]) -> None:
    if not module.residual:  # with hidden == dim the hidden channels join the residual stream
        w.add(p("hidden"), "mlp", [Member(p("fc1"), "out"), Member(p("bn1"), "bn"), Member(p("fc2"), "in")],
              _out_channels(module.fc1), activity=(p("lif2"), 0, C), compensate=p("fc2"),
              carriers=((p("lif2"), 0, C),))
    w.carriers.append((p("lif1"), 0, C))
    w.stream += [Member(p("fc1"), "in"), Member(p("fc2"), "out"), Member(p("bn2"), "bn")]


def _spiking_self_attention(w: _Walk, module, p: Callable[[str], str]) -> None:
    dim, heads = _out_channels(module.proj_conv_bn[0]), module.num_heads
    qkv, bn = p("qkv_conv_bn.0"), p("qkv_conv_bn.1")
    w.add(p("qk"), "attention_qk", [Member(qkv, "out", 0), Member(qkv, "out", dim), Member(bn, "bn", 0),
          Member(bn, "bn", dim)], dim, heads=heads, carriers=((p("qkv_lif"), 0, C), (p("qkv_lif"), dim, C)))
    w.add(p("v"), "attention_v", [Member(qkv, "out", 2 * dim), Member(bn, "bn", 2 * dim),
          Member(p("proj_conv_bn.0"), "in")], dim, heads=heads,
          # no VBP fold here: on two tiny trained Spikformers it helped once and hurt once
          activity=(p("attn_lif"), 0, HEADS), carriers=((p("qkv_lif"), 2 * dim, C), (p("attn_lif"), 0, HEADS)))
    w.carriers.append((p("proj_lif"), 0, C))
    w.stream += [Member(qkv, "in"), Member(p("proj_conv_bn.0"), "out"), Member(p("proj_conv_bn.1"), "bn")]


def _spike_driven_self_attention(w: _Walk, module, p: Callable[[str], str]) -> None:
    members = []
    for part in ("q", "k", "v"):
        members += [Member(p(f"{part}_conv"), "out"), Member(p(f"{part}_bn"), "bn")]
    w.add(p("qkv"), "attention_qkv", members + [Member(p("proj_conv"), "in")],
          _out_channels(module.q_conv), heads=module.num_heads,
          carriers=tuple((p(f"{part}_lif"), 0, C) for part in ("q", "k", "v")) + ((p("attn_lif"), 0, (2, 4)),))
    w.carriers.append((p("shortcut_lif"), 0, C))
    w.stream += [Member(p(f"{part}_conv"), "in") for part in ("q", "k", "v")]
    w.stream += [Member(p("proj_conv"), "out"), Member(p("proj_bn"), "bn")]


def _spikformer_head(w: _Walk, module, p: Callable[[str], str]) -> None:
    w.stream.append(Member(p("head"), "in"))


def _sdt_head(w: _Walk, module, p: Callable[[str], str]) -> None:
    w.stream.append(Member(p("head"), "in"))
    w.carriers.append((p("head_lif"), 0, C))


# block type (a key of blocks.sj_classes) -> its rule; the first that matches a module applies
RULES: tuple[tuple[str, Callable[[_Walk, nn.Module, Callable[[str], str]], None]], ...] = (
    ("spikformer_stem", _spikformer_stem),
    ("sdt_stem", _sdt_stem),
    ("spikformer_mlp", _spikformer_mlp),
    ("sdt_mlp", _sdt_mlp),
    ("ssa", _spiking_self_attention),
    ("sdsa", _spike_driven_self_attention),
    ("spikformer", _spikformer_head),
    ("sdt", _sdt_head),
)


def structural_groups(net: nn.Module, *, residual: bool = True) -> list[ChannelGroup]:
    """Groups of a Spikformer or Spike-driven Transformer network, in module order."""
    from autocompress.models import registered_block_rules

    classes = sj_classes()
    # a registered family's rules first: they may refine a built-in block type (a subclass of it)
    rules = registered_block_rules() + [(classes[block], rule) for block, rule in RULES]
    walk = _Walk(net)
    for path, module in net.named_modules():
        for block_class, rule in rules:
            if isinstance(module, block_class):
                rule(walk, module, lambda name, path=path: join(path, name))
                break
    if residual and walk.stream:
        first_producer = next(m for m in walk.stream if m.role == "out")
        width = _out_channels(dict(net.named_modules())[first_producer.module])
        walk.add("residual", "residual", walk.stream, width, carriers=tuple(walk.carriers))
    return walk.groups
