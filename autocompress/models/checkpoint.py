"""Checkpoints: state dicts read with ``weights_only=True`` (never arbitrary pickles)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
_MAX_LISTED = 5


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file.

    Accepts a plain state dict or one nested under a usual key (``state_dict``,
    ``model``, ...); strips the ``module.`` prefix DistributedDataParallel adds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    _check_format(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (IndexError, UnpicklingError, ...) for a bad file
        raise CheckpointError(f"checkpoint {path}: {_load_failure(error)}. {_SAVE_HINT}") from None
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict) and obj[key] and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)"
        )
    if all(key.startswith("module.") for key in obj):
        obj = {key[len("module."):]: value for key, value in obj.items()}
    return obj


_SAVE_HINT = ("autocompress reads checkpoints with weights only, never as arbitrary pickles: save them with "
              "torch.save(model.state_dict(), path)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # torch.save's legacy format starts with a pickle PROTO opcode


def _check_format(path: Path) -> None:
    """Refuse a file that is neither of torch.save's formats before torch parses it."""
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


def _load_failure(error: Exception) -> str:
    """The cause in torch's error, in plain words: no terminal escape codes, and none of
    its advice to load with weights_only=False (that would run whatever the file holds)."""
    text = _ANSI.sub("", str(error))
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return f"it holds a Python object other than tensors ({blocked.group(1)}), which is not loaded"
    advice = ("weights_only", "Weights only load failed", "Check the documentation", "Please file an issue",
              "WeightsUnpickler error")
    kept = [line.strip() for line in text.splitlines() if line.strip() and not any(a in line for a in advice)]
    cause = "; ".join(kept) or type(error).__name__
    return f"not a readable PyTorch state-dict file ({cause[:300]})"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_checkpoint(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint into ``net`` strictly; name the first mismatches when it does not fit."""
    state = read_state_dict(path)
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
            + ". Check model.family and model.args against the model the checkpoint was trained as."
        )
    net.load_state_dict(state, strict=True)
