"""Top-1 evaluation of an SViT over a validation set."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch

from autocompress.data import DataBundle
from autocompress.errors import UserInputError
from autocompress.models import SViT


@dataclass
class EvaluationResult:
    accuracy: float  # top-1, percent
    correct: int
    total: int
    seconds: float
    skipped: list[str] = field(default_factory=list)  # unreadable images, by source

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"execution.device: '{name}' asked for, but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    )
    progress.add_task(description, total=total)
    return progress


@torch.inference_mode()
def evaluate_accuracy(
    model: SViT,
    data: DataBundle,
    *,
    batch_size: int = 128,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "evaluating",
) -> EvaluationResult:
    """Top-1 accuracy (percent) over ``data.validation``, deterministic, batched."""
    device = torch.device(device)
    model = model.to(device).eval()
    correct = torch.zeros((), dtype=torch.long, device=device)  # counted on the device: no sync per batch
    total = 0
    skipped: list[str] = []
    start = time.perf_counter()
    loader = data.validation_loader(batch_size, workers, pin_memory=device.type == "cuda")
    with _progress(progress, len(data.validation), description) as bar:
        for images, labels, batch_skipped in loader:
            skipped += batch_skipped
            if len(labels):
                logits = model(images.to(device, non_blocking=True))
                correct += (logits.argmax(1) == labels.to(device, non_blocking=True)).sum()
                total += len(labels)
            if bar is not None:
                bar.advance(bar.task_ids[0], len(labels) + len(batch_skipped))
    correct = int(correct)
    if total == 0:
        raise UserInputError("the validation set has no readable image; see the warnings above")
    return EvaluationResult(
        accuracy=100.0 * correct / total, correct=correct, total=total,
        seconds=time.perf_counter() - start, skipped=skipped,
    )
