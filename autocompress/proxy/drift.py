"""Membrane-potential drift: how far a candidate's neurons move from the reference's.

On the calibration batch, the membrane potential V of every spiking neuron layer l at
every time step (SpikingJelly's ``v_seq``) is recorded for the reference model once
and for the candidate (the physically pruned, fake-quantized model: one forward pass).
``drift_l = 1 - cos(V_cand, V_ref)`` over time steps, images and positions (a silent
candidate layer counts 1); the drift is the mean over layers with ``V_ref != 0``. A
pruned layer is compared on its kept channels (``ChannelGroup.carriers``). Cosine
rather than relative L1, which saturates once a layer's activity is gone: the README's
"Search" section and experiments/bench/RESULTS.md (section proxy) have the figures.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from autocompress.compress import ChannelGroup, channel_view


@torch.inference_mode()
def record_potentials(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{neuron layer: V}``, V [T, N, ...]: the potential each time step leaves (after charge, fire, reset)."""
    potentials: dict[str, torch.Tensor] = {}
    hooks, previous = [], {}
    for name, node in model.spiking_neurons():
        previous[name] = node.store_v_seq
        node.store_v_seq = True
        hooks.append(node.register_forward_hook(
            lambda module, _i, _o, name=name: potentials.__setitem__(name, module.v_seq.detach().clone())))
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
        for name, node in model.spiking_neurons():
            node.store_v_seq = previous[name]
    return potentials


def kept_channels(
    groups: Mapping[str, ChannelGroup], removed: Mapping[str, Sequence[int]]
) -> dict[str, tuple[tuple[int, ...], set[int]]]:
    """``{neuron layer: (channel axes, removed channel positions)}`` for pruned layers."""
    cut: dict[str, tuple[tuple[int, ...], set[int]]] = {}
    for name, channels in removed.items():
        if not channels:
            continue
        for path, offset, axes in groups[name].carriers:
            axes_seen, positions = cut.setdefault(path, (axes, set()))
            if axes_seen != axes:
                raise ValueError(f"neuron layer {path} is listed with channel axes {axes_seen} and {axes}")
            positions.update(offset + i for i in channels)
    return cut


def layer_drifts(
    reference: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    cut: Mapping[str, tuple[tuple[int, ...], set[int]]],
) -> dict[str, float]:
    """Per-layer drift; pruned layers on their kept channels."""
    drifts: dict[str, float] = {}
    for name, v_ref in reference.items():
        v_cand = candidate.get(name)
        if v_cand is None:
            continue
        if name in cut:
            axes, removed = cut[name]
            v_ref = channel_view(v_ref, axes)
            keep = torch.tensor(sorted(set(range(v_ref.shape[2])) - removed), dtype=torch.long)
            v_ref = v_ref.index_select(2, keep)
            v_cand = channel_view(v_cand, axes)
        if v_cand.shape != v_ref.shape:
            raise ValueError(
                f"neuron layer {name}: candidate potentials {tuple(v_cand.shape)} do not match the reference "
                f"{tuple(v_ref.shape)} on the kept channels"
            )
        ref_norm = float(v_ref.double().norm())
        if ref_norm == 0:
            continue
        cand_norm = float(v_cand.double().norm())
        if cand_norm == 0:
            drifts[name] = 1.0
        else:
            cosine = float((v_cand.double() * v_ref.double()).sum()) / (cand_norm * ref_norm)
            drifts[name] = max(0.0, 1.0 - cosine)
    return drifts


def membrane_drift(
    reference: Mapping[str, torch.Tensor],
    candidate_model,
    images: torch.Tensor,
    groups: Mapping[str, ChannelGroup] | None = None,
    removed: Mapping[str, Sequence[int]] | None = None,
) -> float:
    """The drift of ``candidate_model`` against the reference potentials."""
    cut = kept_channels(groups or {}, removed or {})
    drifts = layer_drifts(reference, record_potentials(candidate_model, images), cut)
    return sum(drifts.values()) / len(drifts) if drifts else 0.0
