"""Running searches: sessions (model + data), the pipeline that sets a search up, the
driver, the Ray executor, the run store and what is read from it (status, progress,
pareto.json), and export."""

from autocompress.engine.driver import RunOptions, resume_search, start_search
from autocompress.engine.exporting import export_point
from autocompress.engine.pareto_file import pareto_document
from autocompress.engine.pipeline import Setup, build_candidate, channel_groups
from autocompress.engine.progress import Progress, session_progress
from autocompress.engine.session import Session
from autocompress.engine.status import run_status
from autocompress.engine.store import RunStore, identity_alive, is_run_dir, process_started, read_driver
from autocompress.engine.worker import Worker

__all__ = [
    "Progress",
    "RunOptions",
    "RunStore",
    "Session",
    "Setup",
    "build_candidate",
    "channel_groups",
    "export_point",
    "identity_alive",
    "is_run_dir",
    "pareto_document",
    "process_started",
    "read_driver",
    "resume_search",
    "run_status",
    "session_progress",
    "start_search",
    "Worker",
]
