"""Top-1 evaluation of an SViT over a validation set."""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from autocompress.console import progress_bar as console_progress_bar
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
    # per item evaluated, in evaluation order: top-1 correct (an unreadable image counts as wrong)
    per_image: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["per_image"]
        return data


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_context(device: torch.device, autocast: str | None):
    """The forward pass's precision: FP32, or torch.autocast with bf16 / fp16."""
    if autocast in (None, "off", "fp32"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[autocast])


@contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's benchmark mode for the call (fixed shapes, many batches: it picks its kernels
    once), put back as the caller had it after: process-wide settings are the caller's."""
    before = torch.backends.cudnn.benchmark
    if enabled:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"execution.device: '{name}' asked for, but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def progress_bar(enabled: bool, total: int, description: str, unit: str = "images"):
    """A transient rich progress bar on stderr (a context whose value is None when not ``enabled``)."""
    if not enabled:
        return nullcontext(None)
    progress = console_progress_bar("{task.description}", unit)
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
    indices: Sequence[int] | None = None,
    autocast: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """Top-1 accuracy (percent) over ``data.validation`` (or its items ``indices``, in that
    order), deterministic, batched; ``per_image`` says which items were right. Correct
    counts stay on the device: one host sync per evaluation, not per batch.
    ``should_stop``, asked before each batch, ends it with :class:`EvaluationCancelled`."""
    device = torch.device(device)
    model = model.to(device).eval()
    hits: list[torch.Tensor] = []  # per batch, on the device
    readable: list[torch.Tensor] = []
    skipped: list[str] = []
    start = time.perf_counter()
    count = len(data.validation) if indices is None else len(indices)
    batches = data.validation_batches(batch_size, workers, device, indices)
    with progress_bar(progress, count, description) as bar, precision_context(device, autocast), \
            cudnn_benchmark(device.type == "cuda"):
        for images, labels, batch_skipped, batch_readable in batches:
            if should_stop is not None and should_stop():
                raise EvaluationCancelled(f"{description}: cancelled after {len(readable)} batches")
            skipped += batch_skipped
            readable.append(batch_readable)
            if len(labels):
                logits = model(images.to(device, non_blocking=True))
                hits.append(logits.argmax(1) == labels.to(device, non_blocking=True))
            if bar is not None:
                bar.advance(bar.task_ids[0], len(batch_readable))
    mask = torch.cat(readable).numpy() if readable else np.zeros(0, dtype=bool)
    per_image = np.zeros(len(mask), dtype=bool)
    if hits:
        per_image[mask] = torch.cat(hits).cpu().numpy()
    total = int(mask.sum())
    if total == 0 and indices is None:  # (a shard of unreadable images is counted by the shards around it)
        raise UserInputError("the validation set has no readable image; see the warnings above")
    correct = int(per_image.sum())
    return EvaluationResult(
        accuracy=100.0 * correct / total if total else 0.0, correct=correct, total=total,
        seconds=time.perf_counter() - start, skipped=skipped, per_image=per_image,
    )


class EvaluationCancelled(Exception):
    """An evaluation stopped between batches because ``should_stop`` said so (its result is
    no longer wanted: the candidate's validation was decided without it)."""


@torch.inference_mode()
def measure_latency(model: SViT, images: torch.Tensor, *, batch_size: int = 16, repeats: int = 10,
                    warmup: int = 2) -> dict:
    """Median wall time (ms) of a forward pass at batch 1 and at ``batch_size`` (images
    taken from ``images``, repeated when there are fewer), on the device ``images`` are
    on, after ``warmup`` untimed passes; CUDA is synchronised around each timed pass."""
    model.eval()
    device = images.device
    batch = images[:batch_size]
    if len(batch) < batch_size:
        batch = batch.repeat(-(-batch_size // len(batch)), *([1] * (images.ndim - 1)))[:batch_size]

    def median_ms(x: torch.Tensor) -> float:
        times = []
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))

    return {"ms": median_ms(images[:1]), "batch_ms": median_ms(batch), "batch_size": batch_size,
            "device": str(device), "threads": torch.get_num_threads()}
