"""Channel groups of SpikingJelly's SViT blocks, found by walking the model.

Each block type says which of its channels are coupled (see ../shared/METHODS.md,
"Structural coupling"); sizes come from the modules, so any depth or width works.
Module paths are relative to the wrapped network (``SViT.net``).
"""

from __future__ import annotations

from torch import nn

from autocompress.compress.groups import ChannelGroup, Member, count_group_params


def _sj_classes():
    from spikingjelly.activation_based.layer.attention import SpikeDrivenSelfAttention, SpikingSelfAttention
    from spikingjelly.activation_based.model import spike_driven_transformer as sdt
    from spikingjelly.activation_based.model import spikformer as sf

    return {
        "spikformer_stem": sf.SpikformerPatchStem,
        "spikformer_mlp": sf.SpikformerMLP,
        "ssa": SpikingSelfAttention,
        "sdt_stem": sdt._PatchEmbed,
        "sdt_mlp": sdt._MLP,
        "sdsa": SpikeDrivenSelfAttention,
        "spikformer": sf.Spikformer,
        "sdt": sdt.SpikeDrivenTransformer,
    }


C = (2,)  # neuron outputs [T, N, C, ...]: channels on axis 2
HEADS = (2, 3)  # Spikformer attention output [T, N, heads, head_dim, L]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _out_channels(module: nn.Module) -> int:
    return module.weight.shape[0]


def structural_groups(net: nn.Module, *, residual: bool = True) -> list[ChannelGroup]:
    """Groups of a Spikformer or Spike-driven Transformer network, in module order."""
    c = _sj_classes()
    groups: list[ChannelGroup] = []
    stream: list[Member] = []  # members of the residual stream, shared by every block
    carriers: list[tuple[str, int, tuple[int, ...]]] = []  # neurons on the residual stream

    def add(name: str, kind: str, members: list[Member], channels: int, **extra) -> None:
        members_t = tuple(members)
        groups.append(ChannelGroup(name=name, kind=kind, channels=channels, members=members_t,
                                   params=count_group_params(net, members_t, channels), **extra))

    for path, module in net.named_modules():
        p = lambda name: _join(path, name)  # noqa: E731
        if isinstance(module, c["spikformer_stem"]):
            stages = len(module.stages)
            for i in range(stages - 1):
                conv, bn = p(f"stages.{i}.conv_bn.block.0"), p(f"stages.{i}.conv_bn.block.1")
                add(p(f"stages.{i}"), "stem", [Member(conv, "out"), Member(bn, "bn"),
                    Member(p(f"stages.{i + 1}.conv_bn.block.0"), "in")],
                    _out_channels(module.stages[i].conv_bn.block[0]), activity=(p(f"stages.{i}.neuron"), 0, C),
                    carriers=((p(f"stages.{i}.neuron"), 0, C),))
            last = stages - 1
            carriers += [(p(f"stages.{last}.neuron"), 0, C), (p("positional_encoding.neuron"), 0, C)]
            stream += [Member(p(f"stages.{last}.conv_bn.block.0"), "out"), Member(p(f"stages.{last}.conv_bn.block.1"), "bn"),
                       Member(p("positional_encoding.conv_bn.block.0"), "in"),
                       Member(p("positional_encoding.conv_bn.block.0"), "out"),
                       Member(p("positional_encoding.conv_bn.block.1"), "bn")]
        elif isinstance(module, c["sdt_stem"]):
            convs = [p(f"stages.{i}.0") for i in range(len(module.stages))] + [p("final_stage.0")]
            for i in range(len(module.stages)):
                add(p(f"stages.{i}"), "stem", [Member(convs[i], "out"), Member(p(f"stages.{i}.1"), "bn"),
                    Member(convs[i + 1], "in")], _out_channels(module.stages[i][0]),
                    activity=(p(f"stages.{i}.2"), 0, C), carriers=((p(f"stages.{i}.2"), 0, C),))
            carriers.append((p("final_lif"), 0, C))
            stream += [Member(p("final_stage.0"), "out"), Member(p("final_stage.1"), "bn"),
                       Member(p("rpe_conv"), "in"), Member(p("rpe_conv"), "out"), Member(p("rpe_bn"), "bn")]
        elif isinstance(module, c["spikformer_mlp"]):
            add(p("hidden"), "mlp", [Member(p("fc1.0"), "out"), Member(p("fc1.1"), "bn"), Member(p("fc2.0"), "in")],
                _out_channels(module.fc1[0]), activity=(p("neuron1"), 0, C), compensate=p("fc2.0"),
                carriers=((p("neuron1"), 0, C),))
            carriers.append((p("neuron2"), 0, C))
            stream += [Member(p("fc1.0"), "in"), Member(p("fc2.0"), "out"), Member(p("fc2.1"), "bn")]
        elif isinstance(module, c["sdt_mlp"]):
            if not module.residual:  # with hidden == dim the hidden channels join the residual stream
                add(p("hidden"), "mlp", [Member(p("fc1"), "out"), Member(p("bn1"), "bn"), Member(p("fc2"), "in")],
                    _out_channels(module.fc1), activity=(p("lif2"), 0, C), compensate=p("fc2"),
                    carriers=((p("lif2"), 0, C),))
            carriers.append((p("lif1"), 0, C))
            stream += [Member(p("fc1"), "in"), Member(p("fc2"), "out"), Member(p("bn2"), "bn")]
        elif isinstance(module, c["ssa"]):
            dim, heads = _out_channels(module.proj_conv_bn[0]), module.num_heads
            qkv, bn = p("qkv_conv_bn.0"), p("qkv_conv_bn.1")
            add(p("qk"), "attention_qk", [Member(qkv, "out", 0), Member(qkv, "out", dim), Member(bn, "bn", 0),
                Member(bn, "bn", dim)], dim, heads=heads, carriers=((p("qkv_lif"), 0, C), (p("qkv_lif"), dim, C)))
            add(p("v"), "attention_v", [Member(qkv, "out", 2 * dim), Member(bn, "bn", 2 * dim),
                Member(p("proj_conv_bn.0"), "in")], dim, heads=heads,
                # no VBP fold here: on two tiny trained Spikformers it helped once and hurt once
                activity=(p("attn_lif"), 0, HEADS), carriers=((p("qkv_lif"), 2 * dim, C), (p("attn_lif"), 0, HEADS)))
            carriers.append((p("proj_lif"), 0, C))
            stream += [Member(qkv, "in"), Member(p("proj_conv_bn.0"), "out"), Member(p("proj_conv_bn.1"), "bn")]
        elif isinstance(module, c["sdsa"]):
            members = []
            for part in ("q", "k", "v"):
                members += [Member(p(f"{part}_conv"), "out"), Member(p(f"{part}_bn"), "bn")]
            add(p("qkv"), "attention_qkv", members + [Member(p("proj_conv"), "in")],
                _out_channels(module.q_conv), heads=module.num_heads,
                carriers=tuple((p(f"{part}_lif"), 0, C) for part in ("q", "k", "v")) + ((p("attn_lif"), 0, (2, 4)),))
            carriers.append((p("shortcut_lif"), 0, C))
            stream += [Member(p(f"{part}_conv"), "in") for part in ("q", "k", "v")]
            stream += [Member(p("proj_conv"), "out"), Member(p("proj_bn"), "bn")]
        elif isinstance(module, (c["spikformer"], c["sdt"])):
            stream.append(Member(p("head"), "in"))
            if isinstance(module, c["sdt"]):
                carriers.append((p("head_lif"), 0, C))
    if residual and stream:
        first_producer = next(m for m in stream if m.role == "out")
        width = _out_channels(dict(net.named_modules())[first_producer.module])
        add("residual", "residual", stream, width, carriers=tuple(carriers))
    return groups


def fix_attention(net: nn.Module, kept_per_head: dict[str, int]) -> None:
    """Swap attention modules whose channels were pruned for versions that run pruned."""
    from autocompress.compress.attention import PrunedSpikeDrivenSelfAttention, PrunedSpikingSelfAttention

    c = _sj_classes()
    residual_pruned = "residual" in kept_per_head
    for path, module in list(net.named_modules()):
        parent_path, _, name = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        if isinstance(module, c["ssa"]) and not isinstance(module, PrunedSpikingSelfAttention):
            qk, v = kept_per_head.get(_join(path, "qk")), kept_per_head.get(_join(path, "v"))
            if qk is not None or v is not None:
                setattr(parent, name, PrunedSpikingSelfAttention.from_module(module, qk or module.head_dim, v or module.head_dim))
        elif isinstance(module, c["sdsa"]) and not isinstance(module, PrunedSpikeDrivenSelfAttention):
            qkv = kept_per_head.get(_join(path, "qkv"))
            if qkv is not None or residual_pruned:
                setattr(parent, name, PrunedSpikeDrivenSelfAttention.from_module(module, qkv or module.head_dim))
