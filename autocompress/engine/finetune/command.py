"""``autocompress finetune``: which points, one job each (resumed from its checkpoint), the
result measured once on the exported file and kept in the run store."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

from autocompress.compress import export_compressed, footprint
from autocompress.compress.export import load_compressed
from autocompress.compress.qat import freeze_qat, prepare_qat
from autocompress.console import log_info
from autocompress.engine.finetune.ray_train import train_on_ray
from autocompress.engine.pareto_file import paired_with_baseline
from autocompress.engine.finetune.training import (
    CHECKPOINT,
    FINETUNE_DIR,
    META,
    PROGRESS,
    TUNED,
    Job,
    read_checkpoint,
    train_candidate,
    tune_dir,
)
from autocompress.engine.pipeline import build_candidate, channel_groups, priced
from autocompress.engine.session import Session
from autocompress.errors import AutocompressError, UserInputError
from autocompress.limits import Limits, check_limits

Say = Callable[[str], None]


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


def _frozen_with(store, overrides: list[str], sections: Mapping[str, Any] | None = None) -> dict:
    from autocompress.spec import apply_overrides, merge_sections

    data = store.meta("spec")
    bad = [item for item in overrides if not item.strip().startswith("finetune.")]
    bad += [f"{name}=..." for name in sections or {} if name != "finetune"]
    if bad:
        raise UserInputError(f"{bad[0]!r}: fine-tuning changes only the finetune section of the run's spec "
                             "(--set finetune.KEY=VALUE; settings= in Python); the rest is what the search ran with")
    data = apply_overrides(data, overrides) if overrides else data
    return merge_sections(data, sections) if sections else data


def finetune_run(store, points: list[str] | None = None, *, overrides: Sequence[str] = (),
                 sections: Mapping[str, Any] | None = None, workers: int | None = None,
                 address: str | None = None, restart: bool = False, confine: list[str] | None = None,
                 say: Say = log_info, progress: bool = False, limits: Limits | None = None) -> list[dict]:
    """Fine-tune ``points`` (the spec's selection by default) of the run whose store is
    open for writing; return their entries (also kept in the store and in pareto.json).
    The spec, with the settings in force, is checked against ``limits`` (over the caps the
    run started with) before anything runs."""
    from autocompress.engine.pareto_file import pareto_document, write_pareto
    from autocompress.engine.worker import spec_from_frozen

    data = _frozen_with(store, list(overrides) + ([] if workers is None else [f"finetune.workers={workers}"]),
                        sections)
    spec = spec_from_frozen(data, store.meta("spec_dir"), confine=confine)
    settings = spec.finetune
    check_limits(spec, store.limits_in_force(limits), source=f"{store.run_dir} (finetune settings)")
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
            raise UserInputError(f"point {point}: no fully evaluated candidate with that id in {store.run_dir} "
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
            f"{previous['accuracy']:.2f} %); restart=True (--restart) trains it again")
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
            train_on_ray(job, settings.workers, address, spec.execution.device, on_epoch)
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
    worse, better = paired_with_baseline(store.meta("baseline"), measured.per_image, len(measured.per_image))
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
        worse, better = paired_with_baseline(base, measured_held.per_image, len(measured_held.per_image))
        upper = constraints.drop_upper(worse, better, measured_held.total)
        result["holdout"] = {
            "accuracy": measured_held.accuracy, "images": measured_held.total,
            "accuracy_before": None if before is None else before["accuracy"],
            "accuracy_drop": drop, "drop_upper": upper,
            "feasible": None if drop is None else result["feasible"] and (upper if upper is not None else drop)
            <= constraints.max_drop_points + 1e-9}
    return result


def finetune(run_dir: str | os.PathLike, points: list[str] | None = None, *, overrides: Sequence[str] = (),
             sections: Mapping[str, Any] | None = None,
             workers: int | None = None, address: str | None = None, restart: bool = False,
             confine: list[str] | None = None, say: Say = log_info, progress: bool = False,
             limits: Limits | None = None) -> list[dict]:
    """Fine-tune points of a finished (or stopped) run: see :func:`finetune_run`."""
    from autocompress.engine.store import RunStore

    with RunStore.open_writer(run_dir) as store:  # refused while the search (or another finetune) runs
        return finetune_run(store, points, overrides=overrides, sections=sections, workers=workers, address=address, restart=restart,
                            confine=confine, say=say, progress=progress, limits=limits)
