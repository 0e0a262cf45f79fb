"""Model families, registered by name and built by one :func:`create_model`."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from autocompress.errors import ModelError
from autocompress.models._spikingjelly import BaseNode
from autocompress.models.svit import SViT

log = logging.getLogger("autocompress.models")

# family name -> builder taking the validated model spec, returning the bare network
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}
# family name -> its checkpoint converter: (state dict) -> (state dict in the builder's names, summary) or None
_CONVERTERS: dict[str, Callable[[dict], tuple[dict, str] | None]] = {}
# (module class, rule): how channel-group discovery walks a block type a registered family brings
_BLOCK_RULES: list[tuple[type, Callable]] = []


def register_family(name: str, *, args: type | None = None, space: str | None = None, sized: bool = True,
                    converter: Callable[[dict], tuple[dict, str] | None] | None = None,
                    block_rules: tuple[tuple[type, Callable], ...] = (), doc: str | None = None) -> Callable:
    """Register a builder ``(model_spec) -> nn.Module`` under a family name (timm's
    ``@register_model`` style). The one registration gives everything a family needs:

    - ``args`` (a pydantic model of its arguments): the spec accepts ``model.family: name``
      with them (:func:`autocompress.spec.declare_family`): its union, its JSON Schema, the
      checks of a ``sized`` family's SViT sizes against the data, and the caps on them;
    - ``space``: its default search space, a name under ``autocompress/search_spaces`` (None:
      specs must give ``space.file``);
    - ``converter``: turns a checkpoint of the family's own layout into the builder's names
      (``load_checkpoint`` calls it; None from it: the names are already the builder's);
    - ``block_rules``: ``(module class, rule)`` pairs for channel-group discovery of block
      types the built-in rules do not know (a rule as in :mod:`autocompress.compress.rules`).

    The built-in families declare their spec sections in :mod:`autocompress.spec.model`
    (validating a spec must not import torch) and register only their builders here."""
    if args is not None:
        from autocompress.spec.model import declare_family  # the module: a plug-in may register while it loads

        declare_family(name, args, space=space, sized=sized, doc=doc)

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = builder
        if converter is not None:
            _CONVERTERS[name] = converter
        _BLOCK_RULES.extend(block_rules)
        return builder

    return decorate


def family_converter(family: str | None) -> Callable[[dict], tuple[dict, str] | None] | None:
    return _CONVERTERS.get(family) if family else None


def registered_block_rules() -> list[tuple[type, Callable]]:
    """The channel-group rules registered families brought (after the built-in ones)."""
    return list(_BLOCK_RULES)


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def create_model(model_spec) -> SViT:
    """Build the (untrained) SViT a spec's ``model`` section describes.

    The initial weights are drawn from a fixed seed, without touching the caller's
    random state: every process (the driver, each Ray worker, a resumed run) builds the
    same model, also when no checkpoint replaces them."""
    family = model_spec.family
    if family not in _FAMILIES:
        raise ModelError(f"model.family: no builder registered for {family!r}; known: {', '.join(family_names())}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _FAMILIES[family](model_spec)
    args = model_spec.args if isinstance(model_spec.args, dict) else model_spec.args.model_dump()
    model = SViT(net, family, args, time_steps=getattr(model_spec, "time_steps", None),
                 factory=getattr(model_spec, "factory", None))
    if not model.spiking_neurons():
        raise ModelError(
            f"model: the {family} model has no SpikingJelly neuron layers; autocompress needs them "
            "(spikingjelly.activation_based.neuron) to measure membrane-potential drift"
        )
    return model.eval()


def parameter_count(model_spec) -> int | None:
    """Parameters and buffers of the model a spec describes, counted on PyTorch's meta
    device (shapes only: nothing is allocated, no weights are drawn). None when the
    model cannot be built there (a custom factory that needs real tensors)."""
    family = model_spec.family
    if family not in _FAMILIES:
        return None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = _FAMILIES[family](model_spec)
    except ModelError:
        raise
    except Exception as error:  # a factory that does real work while it builds
        log.debug("no meta-device parameter count for %s: %s", family, error)
        return None
    return sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())


@register_family("spikingjelly_spikformer")
@register_family("spikformer")  # its earlier name; see vocabulary.FAMILY_ALIASES
def _spikingjelly_spikformer(model_spec) -> nn.Module:
    from spikingjelly.activation_based.model import Spikformer

    a = model_spec.args
    return Spikformer(
        T=a.T, in_channels=a.in_channels, img_size_h=a.image_size, img_size_w=a.image_size,
        patch_size=a.patch_size, num_classes=a.num_classes, embed_dims=a.embed_dims,
        num_heads=a.num_heads, mlp_ratio=a.mlp_ratio, depths=a.depths,
    )


def _official_spikformer(model_spec, patch_size: int) -> nn.Module:
    from autocompress.models.official import OfficialSpikformer

    a = model_spec.args
    return OfficialSpikformer(
        T=a.T, in_channels=a.in_channels, img_size=a.image_size, patch_size=patch_size,
        num_classes=a.num_classes, embed_dims=a.embed_dims, num_heads=a.num_heads,
        mlp_ratio=a.mlp_ratio, depths=a.depths,
    )


@register_family("spikformer_imagenet")
def _spikformer_imagenet(model_spec) -> nn.Module:
    return _official_spikformer(model_spec, patch_size=16)


@register_family("spikformer_cifar")
def _spikformer_cifar(model_spec) -> nn.Module:
    return _official_spikformer(model_spec, patch_size=4)


@register_family("spike_driven_transformer")
def _spike_driven_transformer(model_spec) -> nn.Module:
    from autocompress.models.official import OfficialSpikeDrivenTransformer

    a = model_spec.args
    return OfficialSpikeDrivenTransformer(
        T=a.T, in_channels=a.in_channels, num_classes=a.num_classes, embed_dims=a.embed_dims,
        num_heads=a.num_heads, depths=a.depths, mlp_ratio=a.mlp_ratio, pooling_stat=a.pooling_stat,
    )


@contextmanager
def importable(folders: list[str]) -> Iterator[None]:
    """``folders`` on ``sys.path`` (after the installed packages) for the block only: a
    custom factory's module, and what it imports while it builds the network, are found;
    the caller's ``sys.path`` is as it was afterwards."""
    added = [folder for folder in dict.fromkeys(folders) if folder not in sys.path]
    sys.path.extend(added)
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


def import_factory(path: str, search_dirs: list[str] | None = None) -> Callable[..., nn.Module]:
    """Import ``package.module:function``; ``search_dirs`` and the working directory
    are importable too (after the installed packages), while it is imported."""
    module_name, _, attribute = path.partition(":")
    try:
        with importable([*(search_dirs or []), os.getcwd()]):
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"model.factory: cannot import module '{module_name}' ({error}); is it installed or in the working directory?") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModelError(f"model.factory: module '{module_name}' has no callable '{attribute}'")
    return factory


@register_family("custom")
def _custom(model_spec) -> nn.Module:
    spec_dir = getattr(model_spec, "_spec_dir", None)
    folders = [str(spec_dir)] if spec_dir else []
    factory = import_factory(model_spec.factory, folders)
    try:
        with importable([*folders, os.getcwd()]):  # what the factory imports as it builds
            net = factory(**model_spec.args)
    except TypeError as error:
        raise ModelError(f"model.args: the factory {model_spec.factory} does not accept these arguments: {error}") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"model.factory: {model_spec.factory} returned {type(net).__name__}, not a torch.nn.Module")
    if not any(isinstance(m, BaseNode) for m in net.modules()):
        raise ModelError(
            f"model.factory: the model from {model_spec.factory} has no SpikingJelly neurons "
            "(spikingjelly.activation_based.neuron.BaseNode subclasses)"
        )
    return net
