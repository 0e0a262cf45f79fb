"""Structured pruning of channel groups: selection, removal, masking, VBP compensation.

- Selection: per head, the channels with the lowest importance go. ``l2`` ranks a
  channel by the L2 norm of its producing filters (PSViT / PrimeSVT); ``variance``
  ranks it by the variance of its spike rate on the calibration batch (VBP, see
  :func:`activity_statistics`); groups with no recorded activity fall back to ``l2``.
- Removal (:func:`prune_network`) makes the weight tensors physically smaller, in one
  pass per tensor axis so that fused tensors (Spikformer's qkv) are sliced once.
- Masking (:func:`mask_network`) zeroes the same channels in the full model: the
  producers' filters and biases and their batch norms' scale and shift are set to 0,
  so the channel carries exactly 0 and its neurons never fire. Removing a group must
  give the same outputs as masking it: :mod:`~autocompress.compress.verification` checks that.
- VBP compensation: the mean of each removed channel's spike rate is folded into the
  bias of the channel-linear layer that consumes it (``b += W[:, P] @ mu_P``, a bias
  is added where there is none). Right in expectation for that layer's input, because
  the layer is linear; offered for the MLP hidden groups (``ChannelGroup.compensate``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Literal, Mapping, Sequence

import torch
from torch import nn

from autocompress.compress.attention import fix_attention
from autocompress.compress.groups import ChannelGroup, channel_view

Importance = Literal["l2", "variance", "activation"]


# --------------------------------------------------------------------------- selection


def l2_importance(net: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Per channel: the L2 norm of its producing filters (all ``out`` members)."""
    modules = dict(net.named_modules())
    squared = torch.zeros(group.channels, dtype=torch.float64)
    for member in group.members:
        if member.role != "out":
            continue
        weight = modules[member.module].weight.detach().double()
        rows = torch.tensor([member.position(i) for i in range(group.channels)])
        squared += weight[rows].flatten(1).pow(2).sum(1)
    return squared.sqrt()


def consumer_importance(net: nn.Module, group: ChannelGroup, variance: torch.Tensor) -> torch.Tensor:
    """Per channel: what its removal leaves for the kept channels to absorb once its mean
    is folded into the consumer (VBP): the variance of its spike rate times the squared
    norm of the consumer weights it feeds, i.e. the expected squared change of the
    consumer's output. The consumer is the group's compensating layer, else every layer
    that takes the channels as input."""
    modules = dict(net.named_modules())
    members = [m for m in group.members if m.role == "in" and (group.compensate is None or m.module == group.compensate)]
    squared = torch.zeros(group.channels, dtype=torch.float64)
    for member in members:
        weight = modules[member.module].weight.detach().double()
        columns = torch.tensor([member.position(i) for i in range(group.channels)])
        squared += weight[:, columns].transpose(0, 1).flatten(1).pow(2).sum(1)
    return variance.double() * squared


@torch.inference_mode()
def activity_statistics(model, groups: Sequence[ChannelGroup], calibration: torch.Tensor, *,
                        batch: int = 16) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{group: (mean, variance)}`` of each channel's spike rate on the calibration batch.

    The rate of channel c at one token of one image is its spike count over the T time
    steps divided by T; mean and variance are over the images and tokens of the batch.
    The images go through in chunks of ``batch`` and each neuron layer's output is reduced
    to per-channel sums as it is produced, so memory stays that of one forward.
    """
    modules = dict(model.net.named_modules())
    wanted: dict[str, list[ChannelGroup]] = {}
    for group in groups:
        if group.activity is not None:
            wanted.setdefault(group.activity[0], []).append(group)
    sums: dict[str, list] = {g.name: [0.0, 0.0, 0] for members in wanted.values() for g in members}

    def reduce(path, out):
        for group in wanted[path]:
            _, offset, axes = group.activity
            spikes = channel_view(out.detach(), axes)  # [T, N, C_total, tokens...]
            rate = spikes[:, :, offset : offset + group.channels].double().mean(0)  # [N, C, tokens...]
            samples = rate.transpose(0, 1).reshape(group.channels, -1)
            total = sums[group.name]
            total[0] = total[0] + samples.sum(1)
            total[1] = total[1] + samples.pow(2).sum(1)
            total[2] += samples.shape[1]

    hooks = [modules[path].register_forward_hook(lambda _m, _i, out, path=path: reduce(path, out)) for path in wanted]
    try:
        for chunk in calibration.split(batch):
            model(chunk)
    finally:
        for hook in hooks:
            hook.remove()
    stats = {}
    for name, (first, second, count) in sums.items():
        mean = first / count
        stats[name] = (mean, (second / count - mean.pow(2)).clamp_min(0.0))
    return stats


def select_removed(
    group: ChannelGroup, rate: float, importance: torch.Tensor
) -> list[int]:
    """Channels to remove at ``rate``: the least important of each head, evenly per head."""
    per_head = group.channels_per_head
    remove = per_head - group.keep_count(rate)
    if remove <= 0:
        return []
    removed: list[int] = []
    for head in range(group.heads):
        start = head * per_head
        order = torch.argsort(importance[start : start + per_head], stable=True)
        removed += [start + int(i) for i in order[:remove]]
    return sorted(removed)


# --------------------------------------------------------------------------- removal


def _slice_module(module: nn.Module, axis: str, keep: torch.Tensor) -> None:
    """Keep only ``keep`` along ``axis`` of a conv, linear or batch-norm module, in place."""
    if axis == "bn":
        for name in ("weight", "bias"):
            tensor = getattr(module, name, None)
            if tensor is not None:
                setattr(module, name, nn.Parameter(tensor.detach()[keep].clone(), requires_grad=tensor.requires_grad))
        for name in ("running_mean", "running_var"):
            if getattr(module, name, None) is not None:
                setattr(module, name, getattr(module, name)[keep].clone())
        module.num_features = len(keep)
        return
    weight = module.weight.detach()
    if axis == "out":
        module.weight = nn.Parameter(weight[keep].clone())
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.detach()[keep].clone())
        if isinstance(module, nn.Linear):
            module.out_features = len(keep)
        else:
            module.out_channels = len(keep)
    else:
        module.weight = nn.Parameter(weight[:, keep].clone())
        if isinstance(module, nn.Linear):
            module.in_features = len(keep)
        else:
            module.in_channels = len(keep)


def fold_mean(consumer: nn.Module, positions: Sequence[int], mean: torch.Tensor) -> bool:
    """VBP: add ``W[:, positions] @ mean`` to ``consumer``'s bias (creating it if absent).

    Returns whether a bias had to be added.
    """
    weight = consumer.weight.detach()
    contribution = weight[:, list(positions)].flatten(2).sum(2) @ mean.to(weight.dtype)
    added = consumer.bias is None
    if added:
        consumer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    consumer.bias.data += contribution
    return added


def prune_network(
    net: nn.Module,
    groups: Mapping[str, ChannelGroup],
    removed: Mapping[str, Sequence[int]],
    means: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, int], list[str]]:
    """Remove ``removed[group]`` channels from ``net`` in place.

    With ``means`` (VBP), the removed channels' mean activity is first folded into the
    group's compensating layer. Returns ``(kept_per_head, biased)``: the channels each
    pruned group keeps per head, and the layers that got a bias from the fold.
    """
    modules = dict(net.named_modules())
    cut: dict[tuple[str, str], set[int]] = defaultdict(set)
    kept_per_head: dict[str, int] = {}
    biased: list[str] = []
    for name, channels in removed.items():
        if not channels:
            continue
        group = groups[name]
        kept_per_head[name] = group.channels_per_head - len(channels) // group.heads
        if means is not None and name in means and group.compensate is not None:
            consumer = next(m for m in group.members if m.module == group.compensate and m.role == "in")
            if fold_mean(modules[group.compensate], [consumer.position(i) for i in channels], means[name][list(channels)]):
                biased.append(group.compensate)
        for member in group.members:
            cut[(member.module, member.role)].update(member.position(i) for i in channels)
    for (path, axis), positions in cut.items():
        module = modules[path]
        size = module.weight.shape[1] if axis == "in" else (module.num_features if axis == "bn" else module.weight.shape[0])
        keep = torch.tensor(sorted(set(range(size)) - positions), dtype=torch.long)
        _slice_module(module, axis, keep)
    fix_attention(net, kept_per_head)
    return kept_per_head, biased


def prune_model(model, groups: Mapping[str, ChannelGroup], removed: Mapping[str, Sequence[int]], means=None):
    """A pruned copy of an SViT (the input is left untouched), and ``(kept_per_head, biased)``."""
    pruned = copy.deepcopy(model)
    kept, biased = prune_network(pruned.net, groups, removed, means)
    return pruned, kept, biased


# --------------------------------------------------------------------------- masking


@torch.no_grad()
def mask_network(net: nn.Module, groups: Mapping[str, ChannelGroup], removed: Mapping[str, Sequence[int]]) -> None:
    """Zero the ``removed`` channels' producers (filters, biases, BN scale and shift) in place."""
    modules = dict(net.named_modules())
    for name, channels in removed.items():
        group = groups[name]
        for member in group.producers:
            rows = [member.position(i) for i in channels]
            module = modules[member.module]
            for tensor in (module.weight, getattr(module, "bias", None)):
                if tensor is not None:
                    tensor[rows] = 0
