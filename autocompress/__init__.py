"""autocompress: constraint-driven compression search for Spiking Vision Transformers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from autocompress.version import __version__

if TYPE_CHECKING:
    from autocompress.models import SViT


def load(path: str | os.PathLike[str]) -> SViT:
    """Load a model written by ``autocompress export`` (safetensors; weights only, no pickle)."""
    from autocompress.compress import load_compressed

    return load_compressed(path)


def finetune(run_dir: str | os.PathLike[str], points: list[str] | None = None, **options: Any) -> list[dict]:
    """Recovery fine-tuning of a run's points (``autocompress finetune``): see
    :func:`autocompress.engine.finetune.finetune`. Returns one entry per point (accuracy
    before and after, feasibility, the tuned file)."""
    from autocompress.engine.finetune import finetune as run

    return run(run_dir, points, **options)


__all__ = ["__version__", "finetune", "load"]
