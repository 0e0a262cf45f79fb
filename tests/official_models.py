"""The official networks' forward passes, written here from reading the authors' code.

ZK-Zhou/spikformer (imagenet/model.py, cifar10/model.py) and BICLab/Spike-Driven-Transformer
(model/spikeformer.py, module/sps.py, module/ms_conv.py), with their module names, so their
state dicts have the official keys and shapes. Every operation is in the official order;
dropout, drop-path, hooks and the DVS/TET branches are left out (identity in evaluation or
unused by these models). The LIF neuron is SpikingJelly 0.0.0.0.12's ``MultiStepLIFNode``
(tau 2, decay_input, hard reset to 0), which the official code uses, written out here.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn


class LIF(nn.Module):
    """Multi-step LIF over the leading time axis; records its firing rate."""

    def __init__(self, v_threshold: float = 1.0, tau: float = 2.0):
        super().__init__()
        self.v_threshold, self.tau, self.rate = v_threshold, tau, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        spikes = []
        for x_t in x:
            v = v + (x_t - v) / self.tau
            spike = (v - self.v_threshold >= 0).to(x.dtype)
            v = (1.0 - spike) * v  # hard reset to v_reset = 0
            spikes.append(spike)
        out = torch.stack(spikes)
        self.rate = float(out.mean())
        return out


# ----------------------------------------------------------------------- Spikformer, ImageNet


class ImageNetMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc1_lif = LIF()
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = LIF()
        self.c_hidden = hidden

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = self.fc1_conv(x.flatten(0, 1))
        x = self.fc1_bn(x).reshape(T, B, self.c_hidden, H, W).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_conv(x.flatten(0, 1))
        x = self.fc2_bn(x).reshape(T, B, C, H, W).contiguous()
        return self.fc2_lif(x)


class ImageNetSSA(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, 0.125
        for part in ("q", "k", "v"):
            setattr(self, f"{part}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{part}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{part}_lif", LIF())
        self.attn_lif = LIF(v_threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = LIF()

    def heads(self, part, x_for_qkv, T, B, C, N):
        out = getattr(self, f"{part}_conv")(x_for_qkv)
        out = getattr(self, f"{part}_bn")(out).reshape(T, B, C, N).contiguous()
        out = getattr(self, f"{part}_lif")(out)
        return out.transpose(-1, -2).reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, C, H, W = x.shape
        x = x.flatten(3)
        N = x.shape[3]
        x_for_qkv = x.flatten(0, 1)
        q, k, v = (self.heads(part, x_for_qkv, T, B, C, N) for part in ("q", "k", "v"))
        x = k.transpose(-2, -1) @ v
        x = (q @ x) * self.scale
        x = x.transpose(3, 4).reshape(T, B, C, N).contiguous()
        x = self.attn_lif(x)
        x = x.flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_conv(x)).reshape(T, B, C, H, W))


class ImageNetBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # in the official model, never called
        self.attn = ImageNetSSA(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ImageNetMLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class SPS(nn.Module):
    """The official stem (ImageNet: pools after every stage; CIFAR: after the last two)."""

    def __init__(self, in_channels: int, embed_dims: int, pools: tuple[bool, bool, bool, bool]):
        super().__init__()
        dims = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        self.pools = pools
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", nn.Conv2d(dims[i], dims[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(dims[i + 1]))
            setattr(self, f"proj_lif{suffix}", LIF())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = LIF()

    def forward(self, x):
        T, B, _, H, W = x.shape
        x = x.flatten(0, 1)
        for i, suffix in enumerate(["", "1", "2", "3"]):
            x = getattr(self, f"proj_bn{suffix}")(getattr(self, f"proj_conv{suffix}")(x))
            x = getattr(self, f"proj_lif{suffix}")(x.reshape(T, B, *x.shape[1:]).contiguous()).flatten(0, 1).contiguous()
            if self.pools[i]:
                x = self.maxpool(x)
        x_feat = x.reshape(T, B, *x.shape[1:]).contiguous()
        x = self.rpe_bn(self.rpe_conv(x)).reshape(T, B, *x.shape[1:]).contiguous()
        return self.rpe_lif(x) + x_feat


class SpikformerImageNet(nn.Module):
    def __init__(self, T=4, in_channels=3, num_classes=1000, embed_dims=512, num_heads=8, mlp_ratio=4.0, depths=8):
        super().__init__()
        self.T = T
        self.patch_embed = SPS(in_channels, embed_dims, (True, True, True, True))
        self.block = nn.ModuleList([ImageNetBlock(embed_dims, num_heads, mlp_ratio) for _ in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return self.head(x.flatten(3).mean(3).mean(0))


# ----------------------------------------------------------------------- Spikformer, CIFAR


class CIFARMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_linear, self.fc1_bn, self.fc1_lif = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), LIF()
        self.fc2_linear, self.fc2_bn, self.fc2_lif = nn.Linear(hidden, dim), nn.BatchNorm1d(dim), LIF()
        self.c_hidden = hidden

    def forward(self, x):
        T, B, N, C = x.shape
        x = self.fc1_linear(x.flatten(0, 1))
        x = self.fc1_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, self.c_hidden).contiguous()
        x = self.fc1_lif(x)
        x = self.fc2_linear(x.flatten(0, 1))
        x = self.fc2_bn(x.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        return self.fc2_lif(x)


class CIFARSSA(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, 0.125
        for part in ("q", "k", "v"):
            setattr(self, f"{part}_linear", nn.Linear(dim, dim))
            setattr(self, f"{part}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{part}_lif", LIF())
        self.attn_lif = LIF(v_threshold=0.5)
        self.proj_linear, self.proj_bn, self.proj_lif = nn.Linear(dim, dim), nn.BatchNorm1d(dim), LIF()

    def heads(self, part, x_for_qkv, T, B, N, C):
        out = getattr(self, f"{part}_linear")(x_for_qkv)
        out = getattr(self, f"{part}_bn")(out.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
        out = getattr(self, f"{part}_lif")(out)
        return out.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, N, C = x.shape
        x_for_qkv = x.flatten(0, 1)
        q, k, v = (self.heads(part, x_for_qkv, T, B, N, C) for part in ("q", "k", "v"))
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = attn @ v
        x = x.transpose(2, 3).reshape(T, B, N, C).contiguous()
        x = self.attn_lif(x).flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_linear(x).transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C))


class CIFARBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CIFARSSA(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = CIFARMLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikformerCIFAR(nn.Module):
    def __init__(self, T=4, in_channels=3, num_classes=10, embed_dims=384, num_heads=12, mlp_ratio=4.0, depths=4):
        super().__init__()
        self.T = T
        self.patch_embed = SPS(in_channels, embed_dims, (False, False, True, True))
        self.block = nn.ModuleList([CIFARBlock(embed_dims, num_heads, mlp_ratio) for _ in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.patch_embed(x)  # [T, B, C, H, W]
        x = x.flatten(-2).transpose(-1, -2)  # T, B, N, C
        for blk in self.block:
            x = blk(x)
        return self.head(x.mean(2).mean(0))


# ----------------------------------------------------------------------- Spike-driven Transformer v1


class MS_SPS(nn.Module):
    def __init__(self, in_channels: int, embed_dims: int, pooling_stat: str):
        super().__init__()
        dims = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        self.pooling_stat = pooling_stat
        for i, suffix in enumerate(["", "1", "2", "3"]):
            setattr(self, f"proj_conv{suffix}", nn.Conv2d(dims[i], dims[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{suffix}", nn.BatchNorm2d(dims[i + 1]))
            setattr(self, f"proj_lif{suffix}", LIF())
            setattr(self, f"maxpool{suffix}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False))
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)

    def forward(self, x):
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for i, suffix in enumerate(["", "1", "2"]):
            x = getattr(self, f"proj_bn{suffix}")(getattr(self, f"proj_conv{suffix}")(x))
            x = getattr(self, f"proj_lif{suffix}")(x.reshape(T, B, *x.shape[1:]).contiguous()).flatten(0, 1).contiguous()
            if self.pooling_stat[i] == "1":
                x = getattr(self, f"maxpool{suffix}")(x)
        x = self.proj_bn3(self.proj_conv3(x))
        if self.pooling_stat[3] == "1":
            x = self.maxpool3(x)
        x_feat = x
        x = self.proj_lif3(x.reshape(T, B, *x.shape[1:]).contiguous()).flatten(0, 1).contiguous()
        x = self.rpe_bn(self.rpe_conv(x))
        return (x + x_feat).reshape(T, B, *x.shape[1:]).contiguous()


class MS_MLP_Conv(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.res = dim == hidden
        self.fc1_conv, self.fc1_bn, self.fc1_lif = nn.Conv2d(dim, hidden, 1, 1), nn.BatchNorm2d(hidden), LIF()
        self.fc2_conv, self.fc2_bn, self.fc2_lif = nn.Conv2d(hidden, dim, 1, 1), nn.BatchNorm2d(dim), LIF()
        self.c_hidden = hidden

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.fc1_lif(x)
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.c_hidden, H, W).contiguous()
        if self.res:
            x = identity + x
            identity = x
        x = self.fc2_lif(x)
        x = self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        return x + identity


class MS_SSA_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        for part in ("q", "k", "v"):
            setattr(self, f"{part}_conv", nn.Conv2d(dim, dim, 1, 1, bias=False))
            setattr(self, f"{part}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{part}_lif", LIF())
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)  # never called
        self.talking_heads_lif = LIF(v_threshold=0.5)
        self.proj_conv, self.proj_bn = nn.Conv2d(dim, dim, 1, 1), nn.BatchNorm2d(dim)
        self.shortcut_lif = LIF()

    def heads(self, part, x_for_qkv, T, B, C, H, W):
        out = getattr(self, f"{part}_bn")(getattr(self, f"{part}_conv")(x_for_qkv)).reshape(T, B, C, H, W).contiguous()
        out = getattr(self, f"{part}_lif")(out)
        return out.flatten(3).transpose(-1, -2).reshape(T, B, H * W, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.shortcut_lif(x)
        x_for_qkv = x.flatten(0, 1)
        q, k, v = (self.heads(part, x_for_qkv, T, B, C, H, W) for part in ("q", "k", "v"))
        kv = k.mul(v).sum(dim=-2, keepdim=True)
        kv = self.talking_heads_lif(kv)
        x = q.mul(kv)
        x = x.transpose(3, 4).reshape(T, B, C, H, W).contiguous()
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        return x + identity


class MS_Block_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.attn = MS_SSA_Conv(dim, num_heads)
        self.mlp = MS_MLP_Conv(dim, int(dim * mlp_ratio))

    def forward(self, x):
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(nn.Module):
    def __init__(self, T=4, in_channels=3, num_classes=1000, embed_dims=512, num_heads=8, mlp_ratios=4.0, depths=8,
                 pooling_stat="1111"):
        super().__init__()
        self.T = T
        self.patch_embed = MS_SPS(in_channels, embed_dims, pooling_stat)
        self.block = nn.ModuleList([MS_Block_Conv(embed_dims, num_heads, mlp_ratios) for _ in range(depths)])
        self.head_lif = LIF()
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        x = self.head_lif(x.flatten(3).mean(3))
        return self.head(x).mean(0)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, biases and batch-norm statistics, scaled so that every layer spikes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.3)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.75)
                module.bias.copy_(torch.rand(n, generator=generator) * 0.6 + 0.2)
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    return model.eval()


def save_like_timm(path, model, train_args: dict, ema_model=None) -> None:
    """What timm's CheckpointSaver writes: weights beside the optimizer, scaler and argparse args."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.head.weight.sum().backward()
    optimizer.step()
    model.zero_grad()
    document = {"epoch": 299, "arch": "spikformer", "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(), "version": 2,
                "args": argparse.Namespace(model="spikformer", lr=5e-4, mean=(0.485, 0.456, 0.406), **train_args),
                "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0}, "metric": 73.3}
    if ema_model is not None:
        document["state_dict_ema"] = ema_model.state_dict()
    torch.save(document, path)
