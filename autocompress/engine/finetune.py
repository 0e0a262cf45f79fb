"""``autocompress finetune``: recovery fine-tuning of a run's compressed candidates.

A fully evaluated candidate is rebuilt exactly as the search measured it
(:func:`~autocompress.engine.pipeline.build_candidate`: pruned channels removed, every
layer at its bit-width, BatchNorms folded) and trained for ``finetune.epochs`` epochs
on the data set's training split, with quantization-aware training
(:mod:`autocompress.compress.qat`), SpikingJelly's surrogate gradients through the
neurons, and distillation from the uncompressed model (its logits; optionally the
membrane potentials of the kept channels, the quantity the drift proxy compares).

Nothing is chosen by validation data: the last epoch is the result, whatever the
validation accuracies shown as progress say. The result is measured once, after
training, on the file the point exports to (``finetune/<id>/tuned.safetensors``,
loaded back): on the search's validation items (the accuracy its feasibility is judged
by, comparable with the untuned one) and, when the run has one, on the held-out split.

One process trains by default; ``finetune.workers: N`` trains data-parallel (DDP) on N
Ray Train workers. Either way the state is checkpointed at the end of every epoch in
``RUN_DIR/finetune/<id>/checkpoint.pt`` (written atomically, read back with
``weights_only``): a fine-tuning killed at any point resumes from its last epoch.
With Ray on several nodes the run directory must be on storage every node mounts.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.atomic import atomic_write
from autocompress.compress import export_compressed, footprint
from autocompress.compress.export import load_compressed
from autocompress.compress.groups import channel_view
from autocompress.compress.qat import freeze_qat, prepare_qat, train_mode
from autocompress.engine.pipeline import build_candidate, channel_groups, priced
from autocompress.engine.session import Session
from autocompress.errors import AutocompressError, CheckpointError, UserInputError
from autocompress.evaluation import progress_bar
from autocompress.proxy.drift import kept_channels, recording_potentials
from autocompress.search import paired_counts, unpack

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
        if name in cut:
            axes, removed = cut[name]
            v_t = channel_view(v_t, axes)
            keep = torch.tensor(sorted(set(range(v_t.shape[2])) - removed), dtype=torch.long, device=v_t.device)
            v_t = v_t.index_select(2, keep)
            v_s = channel_view(v_s, axes)
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
    atomic_write(directory / PROGRESS, lambda tmp: Path(tmp).write_text(json.dumps(progress)))


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
                              "--restart) to fine-tune from the start") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an autocompress fine-tuning checkpoint; delete it (or pass --restart)")
    return state


def _fault_step() -> int | None:
    """Fault injection for tests and drills (``AUTOCOMPRESS_FAULT_INJECT=kill-in-finetune:N``):
    the training process SIGKILLs itself at its N-th training step counted from the
    start of the fine-tuning (once per point: a marker file beside the checkpoint)."""
    from autocompress.engine.worker import injected_fault

    fault = injected_fault("kill-in-finetune")
    return None if fault is None else fault[1]


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
            raise UserInputError(f"{directory / CHECKPOINT} was written with other fine-tuning settings; pass "
                                 "--restart to start over with the new ones (or set them back to continue)")
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
        atomic_write(directory / CHECKPOINT, lambda tmp: torch.save(checkpoint, tmp))
        _write_progress(directory, {"epoch": epoch + 1, "epochs": settings.epochs, "history": history})
        if report is not None:
            report(entry)


# --------------------------------------------------------------------------- Ray Train


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


def _train_on_ray(job: Job, workers: int, address: str | None, device: str, on_progress: Callable[[dict], None]):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from autocompress.engine.executors import connect_ray

    ray, started = connect_ray(address, local_logs=False)  # errors still come back with the exception
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


# --------------------------------------------------------------------------- the command


def select_points(document: dict, settings, constraints, requested: list[str] | None = None) -> list[str]:
    """The points to fine-tune: ``requested``, else the spec's ``finetune.points``: its
    ids, the best feasible point, the Pareto points whose memory fits ``constraints`` and
    whose accuracy drop exceeds the allowed one by at most ``near_misses_within`` points."""
    if requested:
        return list(dict.fromkeys(requested))
    chosen = list(settings.points.ids)
    if settings.points.best_feasible and document.get("best"):
        chosen.append(document["best"])
    within = settings.points.near_misses_within
    if within is not None and constraints is not None:
        for point in document["points"] + document.get("near_misses", []):
            # with a held-out split measured, a near miss by its held-out figure: feasible on the selection
            # images, not on the held-out ones (nor recommended), within the margin there
            held = point.get("holdout")
            missed, drop = not point["feasible"], point["accuracy_drop"]
            if held is not None and point["feasible"] and not held["feasible"]:
                missed, drop = point["id"] != document.get("best"), held["accuracy_drop"]
            if (constraints.memory_ok(point["memory_bytes"]) and missed
                    and drop <= constraints.max_drop_points + within):
                chosen.append(point["id"])
    return list(dict.fromkeys(chosen))


def _frozen_with(store, overrides: list[str]) -> dict:
    from autocompress.spec import apply_overrides

    data = store.meta("spec")
    bad = [item for item in overrides if not item.strip().startswith("finetune.")]
    if bad:
        raise UserInputError(f"--set {bad[0]!r}: finetune changes only the finetune section of the run's spec "
                             "(--set finetune.KEY=VALUE); the rest is what the search ran with")
    return apply_overrides(data, overrides) if overrides else data


def finetune_run(store, points: list[str] | None = None, *, overrides: list[str] = (), workers: int | None = None,
                 address: str | None = None, restart: bool = False, confine: list[str] | None = None,
                 say: Say = print, progress: bool = True, check: Callable | None = None) -> list[dict]:
    """Fine-tune ``points`` (the spec's selection by default) of the run whose store is
    open for writing; return their entries (also kept in the store and in pareto.json).
    ``check(spec)`` vets the spec with the settings in force before anything runs."""
    from autocompress.engine.pareto_file import pareto_document, write_pareto
    from autocompress.engine.worker import spec_from_frozen

    data = _frozen_with(store, list(overrides) + ([] if workers is None else [f"finetune.workers={workers}"]))
    spec = spec_from_frozen(data, store.meta("spec_dir"), confine=confine)
    settings = spec.finetune
    if check is not None:
        check(spec)  # the caps on what a spec may ask for (autocompress.limits, above this layer)
    document = pareto_document(store)
    if document["baseline"] is None:
        raise UserInputError(f"{store.run_dir}: the search has not measured its baseline yet; nothing to fine-tune")
    records = {r.result.candidate_id: r for r in store.records(("full",))}
    chosen = select_points(document, settings, store.constraints(), points)
    if not chosen:
        say("nothing to fine-tune: no point matches finetune.points (no best feasible point, no near miss)")
        return []
    for point in chosen:
        record = records.get(point)
        if record is None or record.result.early_stopped or record.result.error:
            front = ", ".join(p["id"] for p in document["points"]) or "none yet"
            raise UserInputError(f"--point {point}: no fully evaluated candidate with that id in {store.run_dir} "
                                 f"(early-stopped candidates have no exact accuracy); the Pareto points are: {front}")
    session = Session.open(spec, progress=progress, say=say)
    groups = channel_groups(session)
    entries = []
    for point in chosen:
        entries.append(_finetune_one(store, session, groups, spec, data, records[point], restart=restart,
                                     address=address or spec.execution.ray_address, confine=confine, say=say,
                                     progress=progress))
        write_pareto(store.run_dir / "pareto.json", pareto_document(store))
    return entries


def _finetune_one(store, session, groups, spec, data, record, *, restart, address, confine, say, progress) -> dict:
    settings = spec.finetune
    point = record.result.candidate_id
    job = Job(run_dir=str(store.run_dir), point=point, candidate=record.candidate, spec_data=data,
              spec_dir=store.meta("spec_dir"), confine=confine)
    directory = tune_dir(store.run_dir, point)
    saved = dict(store.meta(META) or {})
    previous = saved.get(point)
    if restart:
        for name in (CHECKPOINT, PROGRESS, TUNED):
            (directory / name).unlink(missing_ok=True)
    elif previous and previous.get("state") == "done" and previous.get("settings") == job.settings_key() \
            and (directory / TUNED).is_file():
        say(f"{point}: already fine-tuned with these settings ({previous['accuracy_before']:.2f} % -> "
            f"{previous['accuracy']:.2f} %); --restart trains it again")
        return previous
    constraints = store.constraints()
    before = record.result.accuracy
    distill = settings.distillation
    how = [f"logits (weight {distill.logits:g}, T {distill.temperature:g})"] if distill.logits else []
    how += [f"membrane potentials (weight {distill.membrane:g})"] if distill.membrane else []
    say(f"fine-tuning {point} ({record.result.memory_bytes:,} bytes, {before:.2f} % top-1, drop "
        f"{record.result.accuracy_drop:+.2f}): {settings.epochs} epochs, {settings.optimizer} lr {settings.lr:g} "
        f"{settings.schedule}, batch {settings.batch_size}, distillation from the uncompressed model: "
        f"{', '.join(how) or 'none'}; {settings.workers or 'no'} Ray Train worker{'s' if settings.workers != 1 else ''}")
    state = read_checkpoint(directory / CHECKPOINT)
    if state is not None and state["settings"] == job.settings_key():
        say(f"{point}: resuming from the checkpoint of epoch {state['epoch']}/{settings.epochs}")
    entry = {"id": point, "state": "running", "accuracy_before": before, "accuracy_drop_before": record.result.accuracy_drop,
             "feasible_before": bool(record.result.feasible), "memory_bytes": record.result.memory_bytes,
             "epochs": settings.epochs, "epoch": 0 if state is None else int(state["epoch"]),
             "history": [] if state is None else json.loads(state["history"]), "settings": job.settings_key(),
             "workers": settings.workers, "started_at": time.time()}
    saved[point] = entry
    store.set_meta(META, saved)

    def on_epoch(item: dict) -> None:
        entry["epoch"] = item["epoch"]
        entry["history"] = [h for h in entry["history"] if h["epoch"] < item["epoch"]] + [item]
        store.set_meta(META, {**(store.meta(META) or {}), point: entry})
        shown = "" if item["accuracy"] is None else f", validation {item['accuracy']:.2f} %"
        say(f"{point}: epoch {item['epoch']}/{item['epochs']}: loss {item['loss']:.4f}{shown} ({item['seconds']:.0f} s)")

    started = time.perf_counter()
    try:
        if settings.workers:
            _train_on_ray(job, settings.workers, address, spec.execution.device, on_epoch)
        else:
            train_candidate(session, groups, job, report=on_epoch, progress=progress)
    except BaseException:
        entry["state"] = "interrupted"
        store.set_meta(META, {**(store.meta(META) or {}), point: entry})
        raise
    entry.update(_measure(session, groups, job, store, constraints, record.result))
    entry.update(state="done", seconds=round(time.perf_counter() - started, 1), ended_at=time.time())
    store.set_meta(META, {**(store.meta(META) or {}), point: entry})
    say(f"{point}: top-1 {before:.2f} % -> {entry['accuracy']:.2f} % (drop {entry['accuracy_drop_before']:+.2f} -> "
        f"{entry['accuracy_drop']:+.2f}; {'feasible' if entry['feasible'] else 'not feasible'}), "
        f"{entry['memory_bytes']:,} bytes{held_out_text(entry)}")
    return entry


def held_out_text(entry: dict) -> str:
    """``; held out 87.38 % (drop +1.36)`` for a tuned point measured on the held-out split, else ''."""
    held = entry.get("holdout")
    if held is None:
        return ""
    drop = held.get("accuracy_drop")
    return f"; held out {held['accuracy']:.2f} %" + ("" if drop is None else f" (drop {drop:+.2f})")


def _measure(session, groups, job: Job, store, constraints, untuned) -> dict:
    """Export the last epoch's model, load the file back and measure it: its accuracy, and
    its spikes and energy again (fine-tuning changes the firing rates; the structure, and so
    the latency, stays the untuned point's)."""
    directory = tune_dir(job.run_dir, job.point)
    state = read_checkpoint(directory / CHECKPOINT)
    if state is None or int(state["epoch"]) != session.spec.finetune.epochs:
        raise AutocompressError(f"{directory}: the fine-tuning ended without its last checkpoint")
    student = build_candidate(session, groups, job.candidate)
    prepare_qat(student, clip=session.spec.compression.mse_clipping)
    student.load_state_dict(state["student"])
    freeze_qat(student)
    size = export_compressed(student.cpu(), directory / TUNED)
    loaded = load_compressed(directory / TUNED)
    measured = session.evaluate(loaded, indices=session.evaluation_order())
    from autocompress.proxy.energy import count_activity

    energy = priced(session, count_activity(loaded.to(session.device), session.data.calibration.to(session.device)))
    worse, better = _paired_with(store.meta("baseline"), measured.per_image)
    upper = constraints.drop_upper(worse, better, measured.total)
    result = {"accuracy": measured.accuracy, "images": measured.total,
              "accuracy_drop": constraints.baseline_accuracy - measured.accuracy, "drop_upper": upper,
              "feasible": constraints.feasible(measured.accuracy, footprint(loaded), energy["energy_mj"],
                                               untuned.latency_ms, upper),
              "energy_mj_before": untuned.energy_mj, "energy_mj": energy["energy_mj"], "synops": energy["synops"],
              "firing_rate": energy["firing_rate"],
              "memory_bytes": footprint(loaded), "file": f"{FINETUNE_DIR}/{job.point}/{TUNED}", "file_bytes": size,
              "holdout": None}
    held = session.holdout_order()
    if len(held):
        saved = store.meta("holdout") or {"results": {}}
        base = saved["results"].get("baseline")
        measured_held = session.evaluate(loaded, indices=held)
        before = saved["results"].get(job.point)
        drop = None if base is None else base["accuracy"] - measured_held.accuracy
        worse, better = _paired_with(base, measured_held.per_image)
        upper = constraints.drop_upper(worse, better, measured_held.total)
        result["holdout"] = {
            "accuracy": measured_held.accuracy, "images": measured_held.total,
            "accuracy_before": None if before is None else before["accuracy"],
            "accuracy_drop": drop, "drop_upper": upper,
            "feasible": None if drop is None else result["feasible"] and (upper if upper is not None else drop)
            <= constraints.max_drop_points + 1e-9}
    return result


def _paired_with(base: dict | None, per_image) -> tuple[int | None, int | None]:
    """``(worse, better)`` of a tuned model's per-image correctness against the baseline's
    as the run stored it (None where it kept none)."""
    if not base or "per_image" not in base:
        return None, None
    return paired_counts(unpack(base64.b64decode(base["per_image"]), len(per_image)), per_image)


def finetune(run_dir: str | os.PathLike, points: list[str] | None = None, *, overrides: list[str] = (),
             workers: int | None = None, address: str | None = None, restart: bool = False,
             confine: list[str] | None = None, say: Say = print, progress: bool = True,
             check: Callable | None = None) -> list[dict]:
    """Fine-tune points of a finished (or stopped) run: see :func:`finetune_run`."""
    from autocompress.engine.store import RunStore

    with RunStore.open_writer(run_dir) as store:  # refused while the search (or another finetune) runs
        return finetune_run(store, points, overrides=overrides, workers=workers, address=address, restart=restart,
                            confine=confine, say=say, progress=progress, check=check)
