"""Running searches: sessions (model + data), evaluation, the driver, executors
(in-process, Ray) and the run store."""

from autocompress.engine.driver import RunOptions, resume_search, start_search
from autocompress.engine.evaluation import EvaluationResult, evaluate_accuracy, resolve_device
from autocompress.engine.session import Session
from autocompress.engine.store import RunStore

__all__ = ["EvaluationResult", "RunOptions", "RunStore", "Session", "evaluate_accuracy", "resolve_device",
           "resume_search", "start_search"]
