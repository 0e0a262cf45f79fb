"""Apply a candidate's per-unit choices to a model.

A candidate names pruning rates per channel group and bit-widths per layer, e.g.
``prune={"blocks.0.mlp.hidden": 0.5}``, ``bits={"blocks.0.mlp.fc1.0": 4}``; units it
does not name keep the baseline (no pruning, 32-bit). The result is a physically
smaller, fake-quantized copy of the model with a :class:`CompressionRecord` that says
exactly what was done, which is all :mod:`autocompress.compress.export` needs to
rebuild the architecture.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping

import torch

from autocompress.compress.discovery import find_channel_groups
from autocompress.compress.folding import fold_batchnorms, foldable_batchnorms, recalibrate_batchnorms
from autocompress.compress.groups import GroupReport
from autocompress.compress.neurons import quantize_neurons
from autocompress.compress.pruning import (
    Importance,
    activity_statistics,
    consumer_importance,
    l2_importance,
    prune_network,
    select_removed,
)
from autocompress.compress.quantization import (
    FULL_PRECISION,
    check_bits,
    correct_biases,
    fake_quantize,
    quantizable_layers,
)
from autocompress.spec.sections import CompressionSpec


@dataclass
class CompressionRecord:
    kept_per_head: dict[str, int] = field(default_factory=dict)  # pruned groups
    bits: dict[str, int] = field(default_factory=dict)  # quantized layers (< 32 bits)
    biased: list[str] = field(default_factory=list)  # layers that got a bias (VBP's fold, a BatchNorm folded in)
    folded: list[str] = field(default_factory=list)  # BatchNorms folded into the layer before them (now identities)
    importance: str = "l2"
    input_shape: list[int] | None = None  # [C, H, W] a custom model's groups were traced with
    neuron_bits: int | None = None  # membrane-potential grid (None: full precision)

    def to_dict(self) -> dict:
        return asdict(self)


def compress_model(
    model,
    *,
    prune: Mapping[str, float] | None = None,
    bits: Mapping[str, int] | None = None,
    importance: Importance | None = None,
    compensate: bool | None = None,
    groups: GroupReport | None = None,
    calibration: torch.Tensor | None = None,
    neuron_bits: int | None = None,
    fold: list[tuple[str, str]] | None | Literal["auto"] = "auto",
    clip: bool | None = None,
    recalibrate: torch.Tensor | None | Literal["auto"] = "auto",
    statistics: dict | None = None,
    correct: torch.Tensor | None = None,
):
    """A compressed copy of ``model`` (an :class:`~autocompress.models.SViT`).

    The defaults are the spec's ``compression`` section's (:class:`~autocompress.spec.sections.CompressionSpec`,
    read here, so that the two cannot differ): variance importance, MSE clipping, and with
    a ``calibration`` batch BatchNorm recalibration on it and folding of the BatchNorms
    checked foldable on it (``groups.folds`` when the caller found them already). Without a
    calibration batch nothing is recalibrated or folded, and pruning needs
    ``importance="l2"`` (or ``statistics``).

    ``importance="variance"`` (VBP) needs the ``calibration`` batch (or its
    ``statistics``, :func:`~autocompress.compress.pruning.activity_statistics`, computed
    once); it folds the removed channels' mean activity into the next layer unless
    ``compensate=False``. ``importance="activation"`` does the same and scores a channel
    by its rate variance times the squared norm of the consumer weights it feeds
    (:func:`~autocompress.compress.pruning.consumer_importance`).
    ``neuron_bits`` puts the membrane potential on a fixed-point grid
    (:mod:`autocompress.compress.neurons`; off by default). ``fold`` (``(layer,
    batchnorm)`` pairs, :func:`~autocompress.compress.folding.foldable_batchnorms`) folds
    those BatchNorms into their layers. ``clip`` quantizes with MSE clipping
    (:func:`~autocompress.compress.quantization.quantize_tensor`). ``recalibrate`` (images)
    re-estimates the BatchNorm statistics of the pruned, quantized model on them before
    they are folded. ``correct`` (images) corrects the biases of the quantized layers for
    the mean shift of their outputs (:func:`~autocompress.compress.quantization.correct_biases`).
    The order: prune, quantize, correct biases, recalibrate, fold (a folded row stays on
    its channel's grid, scaled).
    """
    defaults = CompressionSpec()
    importance = defaults.importance if importance is None else importance
    clip = defaults.mse_clipping if clip is None else clip
    if isinstance(recalibrate, str):  # "auto"
        recalibrate = calibration if defaults.recalibrate_batchnorm else None
    prune, bits = dict(prune or {}), dict(bits or {})
    if importance not in ("l2", "variance", "activation"):
        raise ValueError(f"importance must be 'l2', 'variance' or 'activation', got {importance!r}")
    if importance != "l2" and prune and calibration is None and statistics is None:
        raise ValueError(f"{importance}-based pruning needs the calibration batch (calibration=images), or "
                         "importance='l2'")
    if groups is None:
        groups = find_channel_groups(model, example=calibration)
    if isinstance(fold, str):  # "auto"
        fold = None if not defaults.fold_batchnorm or calibration is None else (
            groups.folds or foldable_batchnorms(model, calibration))
    by_name = groups.by_name()
    unknown = sorted(set(prune) - set(by_name))
    if unknown:
        raise KeyError(f"unknown channel groups {unknown}; known: {sorted(by_name)}")
    layers = quantizable_layers(model.net)
    unknown = sorted(set(bits) - set(layers))
    if unknown:
        raise KeyError(f"unknown layers {unknown}; known: {sorted(layers)}")
    for rate in prune.values():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"a pruning rate is in [0, 1), got {rate}")
    for b in bits.values():
        check_bits(b)

    stats = {}
    if importance != "l2" and prune:
        stats = statistics if statistics is not None else activity_statistics(model, list(by_name.values()), calibration)
    removed: dict[str, list[int]] = {}
    for name, rate in prune.items():
        group = by_name[name]
        if name not in stats:
            score = l2_importance(model.net, group)
        elif importance == "variance":
            score = stats[name][1]
        else:
            score = consumer_importance(model.net, group, stats[name][1])
        removed[name] = select_removed(group, rate, score)
    means = {name: mean for name, (mean, _) in stats.items()} if (compensate is not False and stats) else None

    result = copy.deepcopy(model)
    kept, biased = prune_network(result.net, by_name, {k: v for k, v in removed.items() if v}, means)
    quantized = {path: b for path, b in bits.items() if b != FULL_PRECISION}
    modules = dict(result.net.named_modules())
    originals = {path: modules[path].weight.detach().clone() for path in quantized} if correct is not None else {}
    fake_quantize(result.net, quantized, clip=clip)
    neuron_bits = None if neuron_bits in (None, 32) else neuron_bits
    quantize_neurons(result.net, neuron_bits)  # before recalibrating: the statistics of the model as it runs
    if originals:
        biased += [layer for layer in correct_biases(result, originals, correct) if layer not in biased]
    if recalibrate is not None:
        recalibrate_batchnorms(result, recalibrate)
    fold = list(fold or [])
    biased += [layer for layer in fold_batchnorms(result.net, fold) if layer not in biased]
    if fold:
        fake_quantize(result.net, quantized)  # back onto the grid the export stores (the scaled one)
    traced_shape = list(groups.input_shape) if (kept and groups.input_shape) else None
    result.pruned_channels = {k: v for k, v in removed.items() if v}  # which channels went (for the drift proxy)
    result.compression = CompressionRecord(kept_per_head=kept, bits=quantized, biased=biased,
                                           folded=[norm for _, norm in fold],
                                           importance=importance, input_shape=traced_shape,
                                           neuron_bits=neuron_bits)
    return result.eval()
