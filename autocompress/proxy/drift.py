"""Membrane-potential drift: how far a candidate's neurons move from the reference's.

On the calibration batch, the membrane potential V of every spiking neuron layer l at
every time step (SpikingJelly's ``v_seq``) is recorded for the reference model once
and for the candidate (the physically pruned, fake-quantized model: one forward pass).
``drift_l = 1 - cos(V_cand, V_ref)`` over time steps, images and positions (a silent
candidate layer counts 1); the drift is the mean over layers with ``V_ref != 0``. A
pruned layer is compared on its kept channels (``ChannelGroup.carriers``). Cosine
rather than relative L1, which saturates once a layer's activity is gone: the README's
"Search" section and experiments/bench/RESULTS.md (section proxy) have the figures.

With ``logits`` (``proxy.logits``, on by default) the model's output is one more term: its
logits, centred per image (softmax does not see a shift), compared by the same cosine.
The classification head feeds no neuron, so without it quantizing the head moves no
potential and the drift cannot see it (on Fashion-MNIST a walk spent full evaluations
walking the head down to 2 bits at zero drift).

Each layer is compared as the candidate computes it (float64 sums of the products and
squares), so neither side's potentials need to be held whole: :class:`ReferencePotentials`
keeps the reference when it fits a memory budget and recomputes it chunk by chunk when not.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch

from autocompress.compress import ChannelGroup, channel_view


LOGITS = "<logits>"  # the drift term of the model's output


@torch.inference_mode()
def record_potentials(model, images: torch.Tensor, *, logits: bool = False) -> dict[str, torch.Tensor]:
    """``{neuron layer: V}``, V [T, N, ...]: the potential each time step leaves (after charge, fire, reset);
    with ``logits``, also ``{LOGITS: the centred logits [1, N, K]}``."""
    potentials: dict[str, torch.Tensor] = {}

    def keep(name: str, v_seq: torch.Tensor) -> None:
        potentials[name] = v_seq.clone()

    _with_potentials(model, images, keep, logits=logits)
    return potentials


@contextmanager
def recording_potentials(model, use) -> Iterator[None]:
    """Inside the block, every forward pass of ``model`` hands each neuron layer's ``v_seq``
    (``[T, N, ...]``, with its autograd graph when there is one) to ``use(name, v_seq)`` as
    it is computed, then lets SpikingJelly drop its own copy."""
    hooks, previous = [], {}

    def hook(module, _inputs, _output, name: str) -> None:
        use(name, module.v_seq)
        module.v_seq = None  # SpikingJelly would hold it until the next forward

    for name, node in model.spiking_neurons():
        previous[name] = node.store_v_seq
        node.store_v_seq = True
        hooks.append(node.register_forward_hook(lambda module, i, o, name=name: hook(module, i, o, name)))
    try:
        yield
    finally:
        for handle in hooks:
            handle.remove()
        for name, node in model.spiking_neurons():
            node.store_v_seq = previous[name]


def _with_potentials(model, images: torch.Tensor, use, *, logits: bool = False) -> None:
    """One forward pass of ``model`` on ``images`` under :func:`recording_potentials`; with
    ``logits``, the output centred per image is handed on as the term ``LOGITS``."""
    with recording_potentials(model, use):
        out = model(images)
    if logits:
        use(LOGITS, (out - out.mean(-1, keepdim=True)).unsqueeze(0))


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


def on_kept_channels(name: str, reference: torch.Tensor, candidate: torch.Tensor,
                     cut: Mapping[str, tuple[tuple[int, ...], set[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's reference and candidate potentials, side by side on the channels the
    candidate kept: for a pruned layer (in ``cut``), both viewed with the channels on axis 2
    and the reference's removed channels dropped; any other layer as it is."""
    if name not in cut:
        return reference, candidate
    axes, removed = cut[name]
    reference = channel_view(reference, axes)
    keep = torch.tensor(sorted(set(range(reference.shape[2])) - removed), dtype=torch.long, device=reference.device)
    return reference.index_select(2, keep), channel_view(candidate, axes)


_SLICE = 1 << 22  # values compared at a time (32 MiB per float64 copy)
_PEAK_FACTOR = 3  # peak memory of a recording forward pass / the potentials it records


class _Sums:
    """Per layer: sums of V_cand * V_ref, V_ref^2 and V_cand^2 over everything compared so far (float64)."""

    __slots__ = ("dot", "ref", "cand")

    def __init__(self):
        self.dot = self.ref = self.cand = 0.0


def _accumulate(sums: dict[str, _Sums], name: str, v_ref: torch.Tensor, v_cand: torch.Tensor,
                cut: Mapping[str, tuple[tuple[int, ...], set[int]]]) -> None:
    v_ref, v_cand = on_kept_channels(name, v_ref, v_cand, cut)
    if v_cand.shape != v_ref.shape:
        raise ValueError(
            f"neuron layer {name}: candidate potentials {tuple(v_cand.shape)} do not match the reference "
            f"{tuple(v_ref.shape)} on the kept channels"
        )
    total = sums.setdefault(name, _Sums())
    ref_flat, cand_flat = v_ref.reshape(-1), v_cand.reshape(-1)
    for start in range(0, ref_flat.numel(), _SLICE):  # float64 copies of a slice at a time, not of the layer
        ref = ref_flat[start:start + _SLICE].double()
        cand = cand_flat[start:start + _SLICE].double()
        total.dot += float(torch.dot(cand, ref))
        total.ref += float(torch.dot(ref, ref))
        total.cand += float(torch.dot(cand, cand))


def _drifts(sums: Mapping[str, _Sums]) -> dict[str, float]:
    drifts: dict[str, float] = {}
    for name, total in sums.items():
        if total.ref == 0:
            continue
        if total.cand == 0:
            drifts[name] = 1.0
        else:
            drifts[name] = max(0.0, 1.0 - total.dot / (math.sqrt(total.cand) * math.sqrt(total.ref)))
    return drifts


def layer_drifts(
    reference: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    cut: Mapping[str, tuple[tuple[int, ...], set[int]]],
) -> dict[str, float]:
    """Per-layer drift; pruned layers on their kept channels."""
    sums: dict[str, _Sums] = {}
    for name, v_ref in reference.items():
        if name in candidate:
            _accumulate(sums, name, v_ref, candidate[name], cut)
    return _drifts(sums)


def _mean(drifts: Mapping[str, float]) -> float:
    return sum(drifts.values()) / len(drifts) if drifts else 0.0


@torch.inference_mode()
def membrane_drift(
    reference: Mapping[str, torch.Tensor],
    candidate_model,
    images: torch.Tensor,
    groups: Mapping[str, ChannelGroup] | None = None,
    removed: Mapping[str, Sequence[int]] | None = None,
) -> float:
    """The drift of ``candidate_model`` against the reference potentials (each layer is compared
    as it is computed: the candidate's potentials are never all held at once)."""
    sums: dict[str, _Sums] = {}
    _compare(sums, reference, candidate_model, images, kept_channels(groups or {}, removed or {}))
    return _mean(_drifts(sums))


def _compare(sums: dict[str, _Sums], reference: Mapping[str, torch.Tensor], candidate_model, images: torch.Tensor,
             cut: Mapping[str, tuple[tuple[int, ...], set[int]]]) -> None:
    """Add one forward pass of the candidate on ``images`` to ``sums``, layer by layer as it runs."""
    def compare(name: str, v_seq: torch.Tensor) -> None:
        if name in reference:
            _accumulate(sums, name, reference[name], v_seq, cut)

    _with_potentials(candidate_model, images, compare, logits=LOGITS in reference)


class ReferencePotentials:
    """The reference side of the drift on a calibration batch. Its potentials are kept when
    they fit ``budget_bytes`` (the whole batch in one forward, as a small model's are);
    otherwise nothing is kept and they are recomputed chunk by chunk, each chunk compared
    with the candidate's as both are computed, so memory stays flat in the calibration size
    at the cost of one more forward pass per probe."""

    def __init__(self, model, images: torch.Tensor, *, budget_bytes: int = 1 << 30, logits: bool = False):
        self.model, self.images, self.logits = model, images, logits
        per_image = sum(v.numel() * v.element_size()
                        for v in record_potentials(model, images[:1], logits=logits).values())
        self.bytes_per_image = per_image
        # a forward that records potentials holds about three times their size at its peak
        if _PEAK_FACTOR * per_image * len(images) <= budget_bytes:
            self.chunk = len(images)
            self.kept: dict[str, torch.Tensor] | None = record_potentials(model, images, logits=logits)
        else:
            self.chunk = max(1, budget_bytes // (_PEAK_FACTOR * per_image))
            self.kept = None

    @torch.inference_mode()
    def drift(self, candidate_model, groups: Mapping[str, ChannelGroup] | None = None,
              removed: Mapping[str, Sequence[int]] | None = None) -> float:
        if self.kept is not None:
            return membrane_drift(self.kept, candidate_model, self.images, groups, removed)
        cut = kept_channels(groups or {}, removed or {})
        sums: dict[str, _Sums] = {}
        for start in range(0, len(self.images), self.chunk):
            images = self.images[start:start + self.chunk]
            _compare(sums, record_potentials(self.model, images, logits=self.logits), candidate_model, images, cut)
        return _mean(_drifts(sums))
