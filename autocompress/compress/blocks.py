"""The SpikingJelly block classes whose channel coupling autocompress knows (imported
when first asked for: SpikingJelly is slow to import)."""

from __future__ import annotations

import functools


@functools.cache
def sj_classes() -> dict[str, type]:
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


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
