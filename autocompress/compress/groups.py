"""Channel groups, the data model: the channels structured pruning must remove together.

A :class:`ChannelGroup` is a search unit for pruning. Its ``channels`` are numbered
0..C-1 and split evenly over ``heads``; every :class:`Member` says where channel i
lives in one tensor (a producer's output, a batch norm, a consumer's input). Finding
the groups of a model is :mod:`autocompress.compress.discovery`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

Role = Literal["out", "in", "bn"]


@dataclass(frozen=True)
class Member:
    """Channel i of the group is index ``index[i]`` (or ``offset + i``) of ``module`` along
    its output axis (``out``: weight dim 0 and bias), input axis (``in``: weight dim 1),
    or its per-channel parameters and buffers (``bn``)."""

    module: str
    role: Role
    offset: int = 0
    index: tuple[int, ...] | None = None

    def position(self, channel: int) -> int:
        return self.index[channel] if self.index is not None else self.offset + channel


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    kind: str  # mlp | attention_qk | attention_v | attention_qkv | stem | residual | traced
    channels: int
    members: tuple[Member, ...]
    heads: int = 1
    # Neuron layers the group's channels pass through, each as (neuron path, offset, the
    # axes of its output that form the channel index, e.g. (2,) or (2, 3) where the
    # output is split into [heads, channels per head]). ``activity`` is the carrier whose
    # spikes feed the compensating layer (VBP); ``carriers`` are all of them (the drift
    # proxy compares pruned layers on their kept channels).
    activity: tuple[str, int, tuple[int, ...]] | None = None
    carriers: tuple[tuple[str, int, tuple[int, ...]], ...] = ()
    compensate: str | None = None  # the channel-linear consumer that takes VBP's mean fold
    params: int = 0  # parameters that belong to the group's channels

    @property
    def channels_per_head(self) -> int:
        return self.channels // self.heads

    @property
    def producers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role in ("out", "bn"))

    def keep_count(self, rate: float) -> int:
        """Channels kept per head at pruning ``rate`` (at least one per head)."""
        return max(1, round(self.channels_per_head * (1.0 - rate)))


def channel_view(tensor, axes: tuple[int, ...]):
    """``tensor`` [T, N, ...] with the channel ``axes`` moved to axis 2 and flattened."""
    moved = tensor.movedim(axes, tuple(range(2, 2 + len(axes))))
    return moved.flatten(2, 1 + len(axes))


@dataclass
class GroupReport:
    """The groups offered for pruning, and the ones left out with the reason."""

    groups: list[ChannelGroup]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None  # of the images a traced model was traced with
    folds: list[tuple[str, str]] = field(default_factory=list)  # (layer, BatchNorm) pairs checked foldable

    def by_name(self) -> dict[str, ChannelGroup]:
        return {group.name: group for group in self.groups}


def count_group_params(root: nn.Module, members: tuple[Member, ...], channels: int) -> int:
    """Parameters removed when all of a group's channels are removed.

    A layer that both produces and consumes the group's channels (a residual-stream
    convolution) counts the union of its pruned rows and columns once.
    """
    modules = dict(root.named_modules())
    roles: dict[str, list[str]] = {}
    for member in members:
        roles.setdefault(member.module, []).append(member.role)
    total = 0
    for path, module_roles in roles.items():
        module = modules[path]
        if "bn" in module_roles:
            affine = sum(p is not None for p in (getattr(module, "weight", None), getattr(module, "bias", None)))
            total += affine * channels * module_roles.count("bn")
            continue
        weight = module.weight
        out_dim, in_dim, kernel = weight.shape[0], weight.shape[1], weight[0, 0].numel()
        rows, cols = channels * module_roles.count("out"), channels * module_roles.count("in")
        total += (rows * in_dim + cols * out_dim - rows * cols) * kernel
        if getattr(module, "bias", None) is not None:
            total += rows
    return total
