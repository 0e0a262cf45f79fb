"""BatchNorm folded into the convolution or linear layer that feeds it.

In inference a BatchNorm right after a layer is a per-output-channel affine map, so
``bn(conv(x)) == conv'(x)`` with ``W' = W * s`` and ``b' = (b - mean) * s + beta``,
``s = gamma / sqrt(var + eps)``. A deployed SViT stores no BatchNorm at all: folding
removes its four float32 vectors (and the step counter) and leaves one bias vector.
Weight quantization is per output channel, so scaling a row scales its grid: folding
before or after quantizing gives the same integers.

Which BatchNorm follows which layer is found by running the model once: a BatchNorm
whose input shares storage with a layer's output (a view of it, through SpikingJelly's
reshapes or the official code's transposes) and has as many features as the layer has
outputs, with nothing computed in between. The folded model is then checked against the
original on the same images; a fold that changes the output is not used.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _storage(tensor) -> int | None:
    if not isinstance(tensor, torch.Tensor):
        return None
    return tensor.untyped_storage().data_ptr()


@torch.no_grad()
def batchnorm_pairs(model, example: torch.Tensor) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` paths where the BatchNorm takes the layer's output as it is."""
    outputs: dict[int, tuple[str, int]] = {}  # storage -> (producer, its output channels)
    pairs: list[tuple[str, str]] = []
    hooks = []
    modules = dict(model.net.named_modules())

    def producer_hook(path):
        def hook(module, _inputs, output):
            ptr = _storage(output)
            if ptr is not None:
                outputs[ptr] = (path, module.weight.shape[0])
        return hook

    def norm_hook(path):
        def hook(module, inputs, _output):
            found = outputs.get(_storage(inputs[0]) if inputs else None)
            if found is not None and found[1] == module.num_features and (found[0], path) not in pairs:
                pairs.append((found[0], path))
        return hook

    for path, module in modules.items():
        if isinstance(module, PRODUCERS):
            hooks.append(module.register_forward_hook(producer_hook(path)))
        elif isinstance(module, NORMS):
            hooks.append(module.register_forward_hook(norm_hook(path)))
    try:
        was = model.training
        model.eval()
        model(example)
        model.train(was)
    finally:
        for hook in hooks:
            hook.remove()
    norms = [p for p, m in modules.items() if isinstance(m, NORMS)]
    fed_once = {n for n in norms if sum(1 for _, b in pairs if b == n) == 1}
    producers_once = {p for p, _ in pairs if sum(1 for q, _ in pairs if q == p) == 1}
    return [(p, n) for p, n in pairs if n in fed_once and p in producers_once]


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` (dotted) inside ``root``."""
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


@torch.no_grad()
def fold_batchnorms(net: nn.Module, pairs: list[tuple[str, str]]) -> list[str]:
    """Fold each pair's BatchNorm into its layer, in place; the BatchNorm becomes an
    identity. Returns the layers that got a bias they did not have."""
    modules = dict(net.named_modules())
    biased = []
    for layer_path, norm_path in pairs:
        layer, norm = modules[layer_path], modules[norm_path]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps) if norm.affine else \
            1 / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias if norm.affine else torch.zeros_like(scale)
        layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.ndim - 1))).to(layer.weight.dtype))
        bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
        new_bias = (bias - norm.running_mean) * scale + shift
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
            biased.append(layer_path)
        else:
            layer.bias.copy_(new_bias)
        set_module(net, norm_path, nn.Identity())
    return biased


@torch.no_grad()
def foldable_batchnorms(model, example: torch.Tensor, *, tolerance: float = 1e-4) -> list[tuple[str, str]]:
    """The pairs whose folding leaves the model's output on ``example`` unchanged (logits
    within ``tolerance`` of their scale, the same top-1): all of them, or, when the whole
    set changes the output, each pair that does not on its own."""
    pairs = batchnorm_pairs(model, example)
    if not pairs:
        return []
    model.eval()
    reference = model(example)

    def keeps(subset) -> bool:
        folded = copy.deepcopy(model)
        fold_batchnorms(folded.net, subset)
        out = folded(example)
        scale = reference.abs().max().clamp_min(1e-6)
        return bool(((out - reference).abs().max() / scale) <= tolerance and
                    torch.equal(out.argmax(-1), reference.argmax(-1)))

    if keeps(pairs):
        return pairs
    return [pair for pair in pairs if keeps([pair])]


@torch.no_grad()
def recalibrate_batchnorms(model, images: torch.Tensor, *, batch: int = 64) -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``images`` through the
    (compressed, spiking) model itself, so that they describe what its pruned and
    quantized layers now produce; the affine weights are kept. Returns how many."""
    norms = [m for m in model.net.modules() if isinstance(m, NORMS) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the chunks
        norm.train()
    try:
        for chunk in images.split(batch):
            model(chunk)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
            norm.eval()
    return len(norms)
