"""Channel groups of custom models, found by tracing with Torch-Pruning.

Torch-Pruning's dependency graph follows autograd, and it misreads SpikingJelly's
multi-step neurons (their unbind over time steps looks like a channel split). So the
graph is built on a twin of the model whose neurons are identities; its groups are
then turned into :class:`ChannelGroup` members by module name. Custom attention
(reshapes into heads, sums over channels) can still be misread: every traced group
is verified (prune == mask) before it is offered, and the ones that fail are left out
with the reason (:mod:`autocompress.compress.discovery`).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from autocompress.compress.groups import ChannelGroup, GroupReport, Member, count_group_params
from autocompress.models import BaseNode

_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _identity_twin(net: nn.Module) -> nn.Module:
    twin = copy.deepcopy(net)
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, BaseNode):
                setattr(module, name, nn.Identity())
    return twin


def traced_groups(model, example: torch.Tensor | None) -> GroupReport:
    """Candidate groups of ``model.net`` from Torch-Pruning's dependency graph (unverified)."""
    import torch_pruning as tp

    if example is None:
        raise ValueError("tracing a custom model's channel groups needs example images")
    logging.getLogger("torch_pruning").setLevel(logging.ERROR)
    twin = _identity_twin(model.net)
    x = example[:2]
    if model.time_steps is not None:
        x = x.unsqueeze(0).repeat(model.time_steps, *([1] * x.ndim))
    with torch.inference_mode(False), torch.enable_grad():  # the graph is traced through autograd
        graph = tp.DependencyGraph().build_dependency(twin, example_inputs=x.clone())
    names = {module: name for name, module in twin.named_modules()}
    groups: list[ChannelGroup] = []
    rejected: list[tuple[str, str]] = []
    for tp_group in graph.get_all_groups(root_module_types=list(_PRUNABLE)):
        root = tp_group[0].dep.target.module
        name = names.get(root, "?")
        channels = len(tp_group[0].idxs)
        members: list[Member] = []
        problem = None
        for item in tp_group:
            module = item.dep.target.module
            if module not in names:  # an operation (reshape, add, ...), not a layer
                continue
            index = tuple(int(i) for i in item.idxs)
            if len(index) != channels:
                problem = f"{names[module]} maps {len(index)} of the group's {channels} channels"
                break
            out = item.dep.handler.__name__ == "prune_out_channels"
            if isinstance(module, _NORMS):
                members.append(Member(names[module], "bn", index=index))
            elif isinstance(module, _PRUNABLE):
                if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups != 1:
                    problem = f"{names[module]} is a grouped convolution"
                    break
                members.append(Member(names[module], "out" if out else "in", index=index))
            else:
                problem = f"{names[module]} ({type(module).__name__}) has per-channel state autocompress cannot prune"
                break
        group_name = f"{name}.out"
        if problem is None and not any(m.role == "in" for m in members):
            problem = ("no layer consumes its channels in the traced graph: they reach the model's output "
                       "or pass through an operation Torch-Pruning cannot follow")
        if problem is not None:
            rejected.append((group_name, problem))
            continue
        members_t = tuple(dict.fromkeys(members))  # a layer can appear twice in Torch-Pruning's group
        groups.append(ChannelGroup(name=group_name, kind="traced", channels=channels, members=members_t,
                                   params=count_group_params(model.net, members_t, channels)))
    return GroupReport(groups, rejected, input_shape=tuple(example.shape[1:]))
