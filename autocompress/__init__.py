"""autocompress: constraint-driven compression search for Spiking Vision Transformers.

The Python API (:mod:`autocompress.api`)::

    run = autocompress.search("spec.yaml", budget={"max_full_evaluations": 3})
    run.best, run.pareto, run.status()
    run.export(run.best, "model.safetensors"); autocompress.load("model.safetensors")

Importing the package imports nothing heavy (no torch) and changes no process-wide state;
its functions print nothing (messages go to the ``autocompress`` logger).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autocompress.version import __version__

__all__ = ["__version__", "Evaluation", "Exported", "HeldOut", "Point", "Run", "RunStatus", "Tuned", "evaluate", "load", "open_run",
           "search", "validate"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("autocompress.api"), name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")


if TYPE_CHECKING:  # what the names are, for readers and type checkers
    from autocompress.api import (  # noqa: F401
        Evaluation,
        Exported,
        HeldOut,
        Point,
        Run,
        RunStatus,
        Tuned,
        evaluate,
        load,
        open_run,
        search,
        validate,
    )
