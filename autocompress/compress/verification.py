"""Checking a channel group: pruning its channels must give what masking them in the
full model gives (same logits, same spikes in every neuron layer). Traced groups of
custom models are offered only when they pass, and the neuron layers that carry them
are found the same way, by pruning.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from autocompress.compress.groups import ChannelGroup
from autocompress.compress.pruning import mask_network, prune_model, select_removed


def _spike_counts(model, images: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    counts: list[float] = []
    hooks = [node.register_forward_hook(lambda _m, _i, out: counts.append(float(out.detach().sum())))
             for _, node in model.spiking_neurons()]
    try:
        with torch.inference_mode():
            logits = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, counts


def compare_prune_and_mask(model, group: ChannelGroup, removed: Sequence[int], images: torch.Tensor) -> str | None:
    """None when pruning ``removed`` equals masking it (logits to float tolerance, equal
    spike counts in every neuron layer); otherwise what differed."""
    masked = copy.deepcopy(model)
    mask_network(masked.net, {group.name: group}, {group.name: removed})
    try:
        pruned, _, _ = prune_model(model, {group.name: group}, {group.name: removed})
        pruned_logits, pruned_spikes = _spike_counts(pruned, images)
    except Exception as error:  # a wrongly coupled group breaks the forward pass
        return f"the pruned model does not run: {type(error).__name__}: {error}"
    masked_logits, masked_spikes = _spike_counts(masked, images)
    if pruned_logits.shape != masked_logits.shape:
        return f"pruning changes the output shape {tuple(masked_logits.shape)} -> {tuple(pruned_logits.shape)}"
    if pruned_spikes != masked_spikes:
        layers = sum(a != b for a, b in zip(pruned_spikes, masked_spikes))
        return f"spikes differ from the masked model in {layers} neuron layers"
    if not torch.allclose(pruned_logits, masked_logits, rtol=1e-4, atol=1e-5):
        return f"outputs differ from the masked model by up to {float((pruned_logits - masked_logits).abs().max()):.3g}"
    return None


def _check_selection(group: ChannelGroup) -> list[int]:
    # a scattered, seeded choice of half the channels, so that a wrong index mapping shows
    importance = torch.rand(group.channels, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return select_removed(group, 0.5, importance)


def verify_group(model, group: ChannelGroup, images: torch.Tensor | None) -> str | None:
    """Check prune == mask for ``group`` at a 50 % rate (None = verified, else the reason)."""
    if images is None:
        raise ValueError("verifying channel groups needs example images")
    if group.channels_per_head < 2:
        return "fewer than two channels per head: nothing can be pruned"
    return compare_prune_and_mask(model, group, _check_selection(group), images)


def _neuron_outputs(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    hooks = [node.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach()))
             for name, node in model.spiking_neurons()]
    try:
        with torch.inference_mode():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def discover_carriers(model, group: ChannelGroup, images: torch.Tensor) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """The neuron layers a (traced) group's channels pass through, found by pruning: a
    layer whose output loses exactly the removed channels along one axis, and whose
    masked output without them equals the pruned output, carries the group there."""
    removed = _check_selection(group)
    masked = copy.deepcopy(model)
    mask_network(masked.net, {group.name: group}, {group.name: removed})
    pruned, _, _ = prune_model(model, {group.name: group}, {group.name: removed})
    full, cut = _neuron_outputs(masked, images), _neuron_outputs(pruned, images)
    keep = torch.tensor(sorted(set(range(group.channels)) - set(removed)), dtype=torch.long)
    carriers = []
    for name, before in full.items():
        after = cut.get(name)
        if after is None or before.shape == after.shape or before.dim() != after.dim():
            continue
        axes = [i for i, (a, b) in enumerate(zip(before.shape, after.shape)) if a != b]
        if len(axes) == 1 and before.shape[axes[0]] == group.channels and after.shape[axes[0]] == len(keep):
            if torch.equal(before.index_select(axes[0], keep), after):
                carriers.append((name, 0, (axes[0],)))
    return tuple(carriers)
