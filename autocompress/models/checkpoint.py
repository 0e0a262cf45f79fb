"""Checkpoints: state dicts read with ``weights_only=True`` (never arbitrary pickles)."""

from __future__ import annotations

import os
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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (IndexError, UnpicklingError, ...) for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a readable PyTorch state-dict file ({first_line}). "
            "autocompress loads checkpoints with weights only: save them with torch.save(model.state_dict(), path)"
        ) from None
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
