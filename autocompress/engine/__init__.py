"""Running searches: sessions (model + data), the pipeline that sets a search up, the
driver, the Ray executor, the run store and what is read from it (status, progress,
pareto.json), and export.

Names are imported on first use: the HTTP service reads run stores with this package
and must start without importing torch. Fine-tuning is the subpackage
``autocompress.engine.finetune`` (``autocompress.finetune`` for users): a lazy name
``finetune`` here would lose to that subpackage as soon as it is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SOURCES = {
    "RunOptions": "driver", "resume_search": "driver", "start_search": "driver",
    "export_point": "exporting",
    "pareto_document": "pareto_file",
    "Setup": "pipeline", "build_candidate": "pipeline", "channel_groups": "pipeline",
    "Progress": "progress", "session_progress": "progress",
    "Session": "session",
    "run_status": "status",
    "RunStore": "store", "identity_alive": "store", "is_run_dir": "store", "process_started": "store",
    "read_driver": "store",
    "Worker": "worker",
}

__all__ = sorted(_SOURCES)  # noqa: PLE0605 (the names _SOURCES maps)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'autocompress.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"autocompress.engine.{_SOURCES[name]}"), name)


if TYPE_CHECKING:  # what the names are, for readers and type checkers
    from autocompress.engine.driver import RunOptions, resume_search, start_search  # noqa: F401
    from autocompress.engine.exporting import export_point  # noqa: F401
    from autocompress.engine.pareto_file import pareto_document  # noqa: F401
    from autocompress.engine.pipeline import Setup, build_candidate, channel_groups  # noqa: F401
    from autocompress.engine.progress import Progress, session_progress  # noqa: F401
    from autocompress.engine.session import Session  # noqa: F401
    from autocompress.engine.status import run_status  # noqa: F401
    from autocompress.engine.store import (  # noqa: F401
        RunStore,
        identity_alive,
        is_run_dir,
        process_started,
        read_driver,
    )
    from autocompress.engine.worker import Worker  # noqa: F401
