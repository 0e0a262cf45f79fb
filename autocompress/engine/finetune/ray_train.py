"""Data-parallel fine-tuning on Ray Train workers (DDP): the same training loop on each
worker, progress read back from the point's folder."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from autocompress.engine.finetune.training import PROGRESS, Job, train_candidate, tune_dir
from autocompress.engine.pipeline import channel_groups
from autocompress.engine.session import Session
from autocompress.errors import AutocompressError, UserInputError


def _ray_loop(config: dict) -> None:
    """One Ray Train worker (TorchTrainer's train_loop_per_worker)."""
    import ray.train
    import ray.train.torch

    from autocompress.engine.worker import spec_from_frozen

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    job = Job(**config["job"])
    spec = spec_from_frozen(job.spec_data, job.spec_dir, confine=job.confine)
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    session = Session.open(spec, device=str(device), say=lambda message: None)
    groups = channel_groups(session)

    def wrap(model):
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_candidate(session, groups, job, rank=rank, world=world, wrap=wrap if world > 1 else None)


def train_on_ray(job: Job, workers: int, address: str | None, device: str, on_progress: Callable[[dict], None]):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from autocompress.engine.executors import connect_ray

    # errors still come back with the exception; more local workers than CPUs are refused before Ray starts
    ray, started = connect_ray(address, local_logs=False, workers=workers, field="finetune.workers")
    try:
        resources = ray.cluster_resources()
        gpu = device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
        kind = "GPU" if gpu else "CPU"
        if resources.get(kind, 0) < workers:
            raise UserInputError(f"finetune.workers: {workers} workers need {workers} {kind}s, but Ray has "
                                 f"{resources.get(kind, 0):g}; lower finetune.workers (--workers)")
        directory = tune_dir(job.run_dir, job.point)
        trainer = TorchTrainer(
            _ray_loop, train_loop_config={"job": asdict(job)},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
            torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),  # (Ray's default too, said here)
            run_config=RunConfig(name=f"finetune-{job.point}", storage_path=str((directory / "ray").resolve()),
                                 failure_config=FailureConfig(max_failures=2)))
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as error:  # noqa: BLE001 - handed to the main thread
                outcome["error"] = error

        thread = threading.Thread(target=fit, name="autocompress-finetune-ray", daemon=True)
        thread.start()
        seen = 0
        while True:
            thread.join(timeout=1.0)
            seen = _poll_progress(directory, seen, on_progress)
            if not thread.is_alive():
                break
        if "error" in outcome:
            error = outcome["error"]
            cause = getattr(error, "__cause__", None) or error
            raise AutocompressError(f"fine-tuning on Ray failed: {type(cause).__name__}: {cause}") from None
    finally:
        if started:
            ray.shutdown()


def _poll_progress(directory: Path, seen: int, on_progress: Callable[[dict], None]) -> int:
    try:
        history = json.loads((directory / PROGRESS).read_text())["history"]
    except (OSError, ValueError, KeyError):
        return seen
    for entry in history[seen:]:
        on_progress(entry)
    return max(seen, len(history))
