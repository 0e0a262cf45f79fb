"""Checkpoints: state dicts read with ``weights_only=True`` (never arbitrary pickles).

Besides a plain state dict, a training script's checkpoint file is read: timm's
checkpoint saver (the official Spikformer and Spike-driven Transformer ``train.py``)
writes ``model_best.pth.tar`` / ``checkpoint-N.pth.tar`` holding ``state_dict`` (and
``state_dict_ema``) beside the optimizer, the AMP scaler and ``args``, an
``argparse.Namespace``. The namespace is the one Python object allowed beyond plain
data: unpickling it only sets attributes; anything else (a class that would run code)
is refused by name, before it is built. Official key layouts are converted by
:mod:`autocompress.models.convert`.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import CheckpointError
from autocompress.models import convert

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_EMA_KEYS = ("state_dict_ema", "model_ema")
_ALLOWED_GLOBALS = [argparse.Namespace]  # timm-style checkpoints keep the training arguments in one
_MAX_LISTED = 5


@dataclass
class CheckpointFile:
    state: dict[str, torch.Tensor]
    entry: str | None  # the entry the weights came from ("state_dict", "state_dict_ema", ...), None: the top level
    train_args: dict[str, Any] | None  # the training script's saved arguments, when the file has them
    entries: list[str]  # every top-level entry of the file


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike, *, ema: bool = False) -> CheckpointFile:
    """The weights of a checkpoint file (the EMA weights with ``ema``) and what is saved beside them.

    Accepts a plain state dict or one nested under a usual key (``state_dict``,
    ``model``, ...); strips the ``module.`` prefix DistributedDataParallel adds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    zipped = _check_format(path)
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            # mmap: what is never used (the optimizer's moments, twice the weights) is never read into memory
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as error:  # torch raises many kinds (IndexError, UnpicklingError, ...) for a bad file
        raise CheckpointError(f"checkpoint {path}: {_load_failure(error, path)}. {_SAVE_HINT}") from None
    entries = [str(k) for k in obj] if isinstance(obj, dict) else []
    train_args = None
    if isinstance(obj, dict) and isinstance(obj.get("args"), (argparse.Namespace, dict)):
        saved = obj["args"]
        train_args = dict(vars(saved) if isinstance(saved, argparse.Namespace) else saved)
    entry = None
    if ema:
        entry = next((key for key in _EMA_KEYS if isinstance(obj, dict) and _is_state_dict(obj.get(key))), None)
        if entry is None:
            raise CheckpointError(
                f"checkpoint {path}: model.ema is set but the file has no EMA weights (no "
                f"{' or '.join(_EMA_KEYS)} entry; it has {', '.join(entries) or 'no named entries'}); "
                "remove model.ema to use its weights")
        obj = obj[entry]
    elif isinstance(obj, dict) and not _is_state_dict(obj):
        entry = next((key for key in _WRAPPER_KEYS if _is_state_dict(obj.get(key))), None)
        if entry is not None:
            obj = obj[entry]
    if not _is_state_dict(obj):
        listed = f" (entries: {', '.join(entries[:10])})" if entries else ""
        raise CheckpointError(
            f"checkpoint {path}: holds a {type(obj).__name__}{listed}, not a state dict (a mapping of names to "
            f"tensors), nor one under {', '.join(_WRAPPER_KEYS)}"
        )
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return CheckpointFile(state=obj, entry=entry, train_args=train_args, entries=entries)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path).state


_SAVE_HINT = ("autocompress reads checkpoints with weights only, never as arbitrary pickles: save the weights "
              "with torch.save(model.state_dict(), path), or a dict of plain data around them (as timm's "
              "checkpoint saver does)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # torch.save's legacy format starts with a pickle PROTO opcode


def _check_format(path: Path) -> bool:
    """Refuse a file that is neither of torch.save's formats before torch parses it; True
    for the zip format (the legacy one cannot be memory-mapped)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({error.strerror or error})") from None
    if not head:
        raise CheckpointError(f"checkpoint {path}: the file is empty. {_SAVE_HINT}")
    if head != _ZIP_MAGIC and head[0] != _PICKLE_PROTOCOL:
        raise CheckpointError(f"checkpoint {path}: not a file torch.save writes (neither its zip format nor its "
                              f"legacy format). {_SAVE_HINT}")
    return head == _ZIP_MAGIC


def _load_failure(error: Exception, path: Path) -> str:
    """The cause in torch's error, in plain words: no terminal escape codes, and none of
    its advice to load with weights_only=False (that would run whatever the file holds)."""
    text = _ANSI.sub("", str(error))
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        try:  # every such object in the file, not just the first one torch met
            names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path)
                     if n not in {f"{g.__module__}.{g.__qualname__}" for g in _ALLOWED_GLOBALS}]
        except Exception:  # the legacy format cannot be listed without unpickling it
            names = []
        names = names or [blocked.group(1)]
        return (f"it holds Python objects other than tensors and plain data ({', '.join(names[:10])}); "
                "they could run code when loaded, so the file is not loaded")
    advice = ("weights_only", "Weights only load failed", "Check the documentation", "Please file an issue",
              "WeightsUnpickler error")
    kept = [line.strip() for line in text.splitlines() if line.strip() and not any(a in line for a in advice)]
    cause = "; ".join(kept) or type(error).__name__
    return f"not a readable PyTorch state-dict file ({cause[:2000]})"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_checkpoint(net: nn.Module, path: str | os.PathLike, *, family: str | None = None,
                    ema: bool = False) -> str | None:
    """Load a checkpoint into ``net`` strictly, converting an official layout first.

    Returns what the conversion did, in one line (None when the names were already
    autocompress's); names the first mismatches when the weights do not fit. A ``custom``
    model takes the names as they are (it may be the official code itself)."""
    from autocompress.models._registry import family_converter

    checkpoint = read_checkpoint(path, ema=ema)
    state, summary = checkpoint.state, None
    hook = family_converter(family)
    if hook is not None:  # a registered family's own layout
        converted = hook(state)
        if converted is not None:
            state, summary = converted
    layout = convert.detect_layout(state) if family != "custom" and hook is None else None
    if layout is not None:
        fits = convert.FAMILY_OF_LAYOUT[layout]
        if family is not None and family != fits:
            raise CheckpointError(
                f"checkpoint {path} is {convert.DESCRIPTION[layout]}; it fits model.family {fits}, not {family}"
                + (" (SpikingJelly's Spikformer orders its stem differently and computes another network)"
                   if fits.startswith("spikformer_") else "")
                + f". Run `autocompress inspect-checkpoint {path}` for the model section that fits it.")
        try:
            conversion = convert.convert(state, layout)
        except convert.ConversionError as error:
            raise CheckpointError(f"checkpoint {path} looks like {convert.DESCRIPTION[layout]}, but {error}") from None
        state, summary = conversion.state, conversion.summary()
        if checkpoint.entry:
            summary = f"{summary} (weights from '{checkpoint.entry}')"
    expected = net.state_dict()
    shapes = [
        f"{key} (checkpoint {tuple(state[key].shape)}, model {tuple(value.shape)})"
        for key, value in expected.items() if key in state and state[key].shape != value.shape
    ]
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = []
    if shapes:
        problems.append(f"shape mismatch: {_listing(shapes)}")
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: " + "; ".join(problems)
            + ". Check model.family and model.args against the model the checkpoint was trained as "
            + f"(`autocompress inspect-checkpoint {path}` says which they are)."
        )
    net.load_state_dict(state, strict=True)
    return summary


_PRESET = {"spikformer-imagenet": "spikformer_imagenet", "sdt-v1": "sdt_imagenet"}


def inspect_checkpoint(path: str | os.PathLike, *, ema: bool = False) -> dict[str, Any]:
    """What a checkpoint file is and the spec ``model`` section that fits it (see
    ``autocompress inspect-checkpoint``). Loads it into that model to check the fit."""
    from pydantic import TypeAdapter

    from autocompress.models._registry import create_model
    from autocompress.spec import ModelSpec

    checkpoint = read_checkpoint(path, ema=ema)
    try:
        variant = convert.describe_variant(checkpoint.state, checkpoint.train_args)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None
    notes = []
    if variant.family is None:
        return _unknown_layout(path, checkpoint, variant)
    family = variant.family
    args = dict(variant.args)
    if family != "spike_driven_transformer":
        args.pop("pooling_stat", None)
    try:
        model_spec = TypeAdapter(ModelSpec).validate_python({"family": family, "args": args})
    except Exception as error:  # arguments a family refuses (e.g. an image size the stem cannot pool)
        raise CheckpointError(f"checkpoint {path}: its model arguments {args} do not form a {family}: {error}") from None
    model = create_model(model_spec)
    summary = load_checkpoint(model.net, path, family=family, ema=ema)
    parameters = sum(t.numel() for t in model.net.state_dict().values())
    if variant.layout in convert.DESCRIPTION:
        layout_description = convert.DESCRIPTION[variant.layout]
    else:
        layout_description = "autocompress's own names (a model saved from one of its families)"
    cifar = {10: "cifar10", 100: "cifar100"}.get(args["num_classes"])
    preset = cifar or _PRESET.get(variant.layout, "timm_default")
    return {
        "path": str(Path(path).resolve()),
        "file": _file_kind(checkpoint),
        "layout": variant.layout,
        "layout_description": layout_description,
        "variant": variant.name,
        "family": family,
        "parameters": parameters,
        "conversion": summary,
        "from_training_args": variant.from_args,
        "assumed": variant.assumed,
        "notes": notes,
        "model": {"family": family, "args": args, "checkpoint": str(Path(path).resolve()), **({"ema": True} if ema else {})},
        "transform_preset": preset,
    }


# the families whose networks share autocompress's (and SpikingJelly's) module names
SHARED_NAME_FAMILIES = ("spikformer_imagenet", "spikformer_cifar", "spikingjelly_spikformer")


def _file_kind(checkpoint) -> str:
    if checkpoint.entry is None:  # the weights are the file's top level
        return "state dict"
    kind = "timm-style checkpoint" if checkpoint.train_args is not None else "checkpoint dict"
    return f"{kind} (entries: {', '.join(checkpoint.entries[:20])}); weights from '{checkpoint.entry}'"


def _unknown_layout(path, checkpoint, variant) -> dict[str, Any]:
    """A Spikformer in autocompress's own (SpikingJelly's) module names: the official-code families
    and SpikingJelly's Spikformer hold the same tensors under these names but compute different
    functions (their stems pool before or after the neuron), so the file does not say which it is,
    nor its heads, image size or time steps. Said so, with what the tensors do determine; no
    model section is guessed."""
    determined = {key: variant.args[key] for key in ("in_channels", "num_classes", "embed_dims", "depths",
                                                     "mlp_ratio")}
    undetermined = [arg for arg in ("T", "num_heads", "image_size") if arg not in variant.from_args]
    return {
        "path": str(Path(path).resolve()),
        "file": _file_kind(checkpoint),
        "layout": "unknown",
        "layout_description": ("unknown: a Spikformer in autocompress's and SpikingJelly's own module names, which "
                               f"{', '.join(SHARED_NAME_FAMILIES)} share; the tensors do not say which of them "
                               "computed it (their stems differ in where they pool, not in their weights)"),
        "variant": variant.name,
        "family": None,
        "candidate_families": list(SHARED_NAME_FAMILIES),
        "parameters": sum(t.numel() for t in checkpoint.state.values()),
        "conversion": None,
        "determined": determined,
        "from_training_args": variant.from_args,
        "assumed": [],
        "undetermined": ["family", *undetermined] + ["patch_size (spikingjelly_spikformer)"],
        "notes": [f"{arg} from the saved training arguments: {variant.args[arg]!r}" for arg in variant.from_args],
        "model": None,
        "transform_preset": None,
    }
