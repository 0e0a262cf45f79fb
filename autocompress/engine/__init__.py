"""Evaluation, and (later) the driver loop, executors and the run store."""

from autocompress.engine.evaluation import EvaluationResult, evaluate_accuracy, resolve_device
from autocompress.engine.session import Session

__all__ = ["EvaluationResult", "Session", "evaluate_accuracy", "resolve_device"]
