"""SpikingJelly's attention modules, generalised to run with pruned heads.

SpikingJelly's ``SpikingSelfAttention`` assumes q, k and v have the same width and
``SpikeDrivenSelfAttention`` assumes the attention width equals the residual width.
Pruning breaks both, so a pruned model swaps them (:func:`fix_attention`) for these
subclasses, which compute exactly the same operations with the per-head widths stored
on the module.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based.layer.attention import SpikeDrivenSelfAttention, SpikingSelfAttention
from torch import nn

from autocompress.compress.blocks import join, sj_classes


class PrunedSpikingSelfAttention(SpikingSelfAttention):
    """Spikformer's SSA with q/k per-head width ``qk_head_dim`` and v width ``v_head_dim``."""

    @classmethod
    def from_module(cls, module: SpikingSelfAttention, qk_head_dim: int, v_head_dim: int) -> PrunedSpikingSelfAttention:
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()
        new.qk_head_dim, new.v_head_dim = qk_head_dim, v_head_dim
        return new

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        T, N, _, L = x_seq.shape
        heads = self.num_heads
        qk_dim, v_dim = heads * self.qk_head_dim, heads * self.v_head_dim
        qkv = self.qkv_lif(self.qkv_conv_bn(x_seq))
        q, k, v = qkv.split([qk_dim, qk_dim, v_dim], dim=2)
        q = q.reshape(T, N, heads, self.qk_head_dim, L)
        k = k.reshape(T, N, heads, self.qk_head_dim, L)
        v = v.reshape(T, N, heads, self.v_head_dim, L)
        x_seq = (v @ k.transpose(-2, -1) @ q) * self.scale
        x_seq = self.attn_lif(x_seq).reshape(T, N, v_dim, L)
        return self.proj_lif(self.proj_conv_bn(x_seq))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, qk_head_dim={self.qk_head_dim}, v_head_dim={self.v_head_dim}"


class PrunedSpikeDrivenSelfAttention(SpikeDrivenSelfAttention):
    """Spike-driven self-attention whose q/k/v width (``num_heads * head_dim``) may
    differ from the residual width."""

    @classmethod
    def from_module(cls, module: SpikeDrivenSelfAttention, head_dim: int) -> PrunedSpikeDrivenSelfAttention:
        new = cls.__new__(cls)
        new.__dict__ = module.__dict__.copy()
        new.head_dim = head_dim
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, N, _, H, W = x.shape
        width = self.num_heads * self.head_dim
        identity = x
        x = self.shortcut_lif(x)
        q = self.q_lif(self.q_bn(self.q_conv(x)))
        k = self.k_lif(self.k_bn(self.k_conv(x)))
        v = self.v_lif(self.v_bn(self.v_conv(x)))

        def split_heads(value: torch.Tensor) -> torch.Tensor:
            value = value.flatten(3).transpose(-1, -2)
            return value.reshape(T, N, H * W, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        kv = self.attn_lif((k * v).sum(dim=-2, keepdim=True))
        x = (q * kv).transpose(3, 4).reshape(T, N, width, H, W)
        return self.proj_bn(self.proj_conv(x)) + identity

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"


def fix_attention(net: nn.Module, kept_per_head: dict[str, int]) -> None:
    """Swap attention modules whose channels were pruned for versions that run pruned."""
    c = sj_classes()
    residual_pruned = "residual" in kept_per_head
    for path, module in list(net.named_modules()):
        parent_path, _, name = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        if isinstance(module, c["ssa"]) and not isinstance(module, PrunedSpikingSelfAttention):
            qk, v = kept_per_head.get(join(path, "qk")), kept_per_head.get(join(path, "v"))
            if qk is not None or v is not None:
                setattr(parent, name, PrunedSpikingSelfAttention.from_module(module, qk or module.head_dim, v or module.head_dim))
        elif isinstance(module, c["sdsa"]) and not isinstance(module, PrunedSpikeDrivenSelfAttention):
            qkv = kept_per_head.get(join(path, "qkv"))
            if qkv is not None or residual_pruned:
                setattr(parent, name, PrunedSpikeDrivenSelfAttention.from_module(module, qkv or module.head_dim))
