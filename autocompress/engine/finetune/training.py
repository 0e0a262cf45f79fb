"""Training one candidate: the student rebuilt as the search measured it, quantization-aware
training with distillation (logits, optionally membrane potentials), a checkpoint each epoch."""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.atomic import atomic_write, atomic_write_json
from autocompress.compress.qat import prepare_qat, train_mode
from autocompress.engine.pipeline import build_candidate
from autocompress.engine.session import Session
from autocompress.errors import CheckpointError, UserInputError
from autocompress.evaluation import progress_bar
from autocompress.proxy.drift import kept_channels, on_kept_channels, recording_potentials

Say = Callable[[str], None]


FINETUNE_DIR = "finetune"
CHECKPOINT = "checkpoint.pt"
PROGRESS = "progress.json"
TUNED = "tuned.safetensors"
FORMAT = "autocompress-finetune-v1"
META = "finetune"  # run store meta key: {point id: entry}


def tune_dir(run_dir: str | os.PathLike, point: str) -> Path:
    return Path(run_dir) / FINETUNE_DIR / point


@dataclass
class Job:
    """What a training process needs (plain data: it travels to Ray Train workers)."""

    run_dir: str
    point: str
    candidate: dict
    spec_data: dict  # the run's frozen spec, with the finetune settings in force
    spec_dir: str | None
    confine: list[str] | None = None

    def settings_key(self) -> str:
        """The settings a checkpoint must have been written with to be continued."""
        tune = dict(self.spec_data.get("finetune") or {})
        tune.pop("auto", None)
        tune.pop("points", None)
        tune.pop("validate_every", None)
        tune.pop("workers", None)  # a resume may use more or fewer workers: the global batch stays
        return json.dumps(tune, sort_keys=True, default=str)


# --------------------------------------------------------------------------- training


def _schedule(settings, steps_per_epoch: int) -> Callable[[int], float]:
    total = settings.epochs * steps_per_epoch
    warmup = settings.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def epoch_indices(size: int, settings, epoch: int, rank: int, world: int) -> list[int]:
    """This worker's training items of ``epoch``: a seeded permutation (drawn anew each
    epoch; cut to ``images_per_epoch``), dealt round-robin over the workers and padded so
    that every worker takes the same number of steps."""
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    order = torch.randperm(size, generator=generator).tolist()
    if settings.data.images_per_epoch is not None:
        order = order[:settings.data.images_per_epoch]
    per_worker = -(-len(order) // world)
    order += order[:per_worker * world - len(order)]
    return order[rank::world]


@contextmanager
def _potentials(model, record: bool) -> Iterator[dict]:
    """``{neuron layer: V [T, N, ...]}`` of the forward passes inside the block (with
    their autograd graph), when ``record``."""
    seen: dict[str, torch.Tensor] = {}
    if not record:
        yield seen
        return
    with recording_potentials(model, seen.__setitem__):
        yield seen


def membrane_loss(student: dict, teacher: dict, cut: dict) -> torch.Tensor | None:
    """Mean over neuron layers of ``mean((V_s - V_t)^2) / mean(V_t^2)``, pruned layers on
    their kept channels (the teacher's removed channels are dropped)."""
    losses = []
    for name, v_t in teacher.items():
        v_s = student.get(name)
        if v_s is None:
            continue
        v_t, v_s = on_kept_channels(name, v_t, v_s, cut)
        power = v_t.pow(2).mean()
        if power > 0:
            losses.append((v_s - v_t).pow(2).mean() / power)
    return torch.stack(losses).mean() if losses else None


def _seed(settings, epoch: int, rank: int) -> None:
    seed = (settings.seed * 7919 + epoch * 104_729 + rank) % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_progress(directory: Path, progress: dict) -> None:
    atomic_write_json(directory / PROGRESS, progress)


def read_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: say which and how to go on
        reason = (str(error).splitlines() or [""])[0][:160]
        if "Weights only load failed" in reason:  # never loaded otherwise: no pickle from a run directory
            reason = "not a torch file of tensors and plain containers"
        raise CheckpointError(f"fine-tuning checkpoint {path} cannot be read ({reason}); delete it (or pass "
                              "restart=True, --restart) to fine-tune from the start") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an autocompress fine-tuning checkpoint; delete it (or restart: restart=True, --restart)")
    return state


def _fault_step() -> int | None:
    """Fault injection for tests and drills (``AUTOCOMPRESS_FAULT_INJECT=kill-in-finetune:N``):
    the training process SIGKILLs itself at its N-th training step counted from the
    start of the fine-tuning (once per point: a marker file beside the checkpoint)."""
    from autocompress.engine.worker import injected_fault

    fault = injected_fault("kill-in-finetune")
    return None if fault is None else int(fault[1])


def _maybe_kill(directory: Path, step: int, fault: int | None) -> None:
    if fault is not None and step == fault:
        from autocompress.engine.worker import kill_once

        kill_once(directory)


def train_candidate(session: Session, groups, job: Job, *, rank: int = 0, world: int = 1,
                    wrap: Callable | None = None, report: Callable[[dict], None] | None = None,
                    progress: bool = False) -> None:
    """Train ``job``'s candidate from its last checkpoint (or from the start) to the last
    epoch, checkpointing every epoch. ``wrap`` makes the data-parallel model (DDP) of
    the student; rank 0 validates, checkpoints and calls ``report`` after each epoch."""
    spec = session.spec
    settings = spec.finetune
    directory = tune_dir(job.run_dir, job.point)
    device = session.device
    student = build_candidate(session, groups, job.candidate)
    removed = getattr(student, "pruned_channels", {})
    prepare_qat(student, clip=spec.compression.mse_clipping)
    student.to(device)
    teacher = session.model.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    cut = kept_channels(groups.by_name(), removed)
    distill = settings.distillation
    trained = wrap(student) if wrap is not None else student
    parameters = [p for p in student.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                                    weight_decay=settings.weight_decay, nesterov=settings.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)

    from autocompress.data.training import collate, training_set

    dataset = training_set(spec, model_classes=session.data.num_classes)
    per_worker_batch = max(1, -(-settings.batch_size // world))
    steps_per_epoch = -(-len(epoch_indices(len(dataset), settings, 0, rank, world)) // per_worker_batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, steps_per_epoch))
    history: list[dict] = []
    start_epoch = 0
    state = read_checkpoint(directory / CHECKPOINT)
    if state is not None:
        if state["settings"] != job.settings_key():
            raise UserInputError(f"{directory / CHECKPOINT} was written with other fine-tuning settings; restart "
                                 "(restart=True, --restart) to start over with the new ones (or set them back to continue)")
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
    selection = session.evaluation_order() if rank == 0 else None
    fault = _fault_step() if rank == 0 else None

    for epoch in range(start_epoch, settings.epochs):
        _seed(settings, epoch, rank)
        order = epoch_indices(len(dataset), settings, epoch, rank, world)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order), batch_size=per_worker_batch,
                                             shuffle=False, num_workers=spec.data.workers, collate_fn=collate,
                                             pin_memory=device.type == "cuda")
        train_mode(student)
        started = time.perf_counter()
        totals = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "membrane": 0.0, "images": 0}
        with progress_bar(progress and rank == 0, steps_per_epoch, f"epoch {epoch + 1}/{settings.epochs}",
                          unit="steps") as bar:
            for images, labels in loader:
                if not len(labels):
                    continue
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.no_grad(), _potentials(teacher, distill.membrane > 0) as teacher_v:
                    teacher_logits = teacher(images) if (distill.logits > 0 or distill.membrane > 0) else None
                with _potentials(student, distill.membrane > 0) as student_v:
                    logits = trained(images)
                ce = F.cross_entropy(logits, labels)
                loss = (1 - distill.logits) * ce
                kd = membrane = None
                if distill.logits > 0:
                    t = distill.temperature
                    kd = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                                  log_target=True, reduction="batchmean") * t * t
                    loss = loss + distill.logits * kd
                if distill.membrane > 0:
                    membrane = membrane_loss(student_v, teacher_v, cut)
                    if membrane is not None:
                        loss = loss + distill.membrane * membrane
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                _maybe_kill(directory, int(scheduler.last_epoch), fault)  # last_epoch: steps taken since the start
                n = len(labels)
                totals["images"] += n
                for key, value in (("loss", loss), ("ce", ce), ("kd", kd), ("membrane", membrane)):
                    if value is not None:
                        totals[key] += float(value.detach()) * n
                if bar is not None:
                    bar.update(bar.task_ids[0], advance=1, description=f"epoch {epoch + 1}/{settings.epochs} "
                               f"loss {totals['loss'] / totals['images']:.3f}")
        if rank != 0:
            continue
        count = max(1, totals["images"])
        entry = {"epoch": epoch + 1, "epochs": settings.epochs, "seconds": round(time.perf_counter() - started, 2),
                 "images": totals["images"] * world, "lr": scheduler.get_last_lr()[0],
                 **{key: totals[key] / count for key in ("loss", "ce", "kd", "membrane")}, "accuracy": None}
        if settings.validate_every and ((epoch + 1) % settings.validate_every == 0 or epoch + 1 == settings.epochs):
            entry["accuracy"] = session.evaluate(student, indices=selection).accuracy  # shown, never chosen by
        history.append(entry)
        checkpoint = {"format": FORMAT, "epoch": epoch + 1, "settings": job.settings_key(),
                      "candidate": job.point, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "history": json.dumps(history)}
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / CHECKPOINT, lambda tmp: torch.save(checkpoint, tmp))  # noqa: B023 (called at once)
        _write_progress(directory, {"epoch": epoch + 1, "epochs": settings.epochs, "history": history})
        if report is not None:
            report(entry)
