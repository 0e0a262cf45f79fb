"""``autocompress export``: the packed model of a run's fully evaluated candidate.

The model is rebuilt as the workers built it for the full evaluation: the run's frozen
spec, and :func:`~autocompress.engine.pipeline.build_candidate` on the candidate's
config; then written with :func:`~autocompress.compress.export_compressed`. Loading the file with
:func:`autocompress.load` gives a model whose validation accuracy is the recorded one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from autocompress.compress import export_compressed, footprint
from autocompress.console import log_info
from autocompress.engine.pareto_file import pareto_document
from autocompress.engine.pipeline import build_candidate, channel_groups
from autocompress.engine.session import Session
from autocompress.engine.store import RunStore
from autocompress.engine.worker import spec_from_frozen
from autocompress.errors import UserInputError


def export_point(run_dir: str | os.PathLike, point_id: str, out: str | os.PathLike, *,
                 say: Callable[[str], None] = log_info, confine: list[str] | None = None, tuned: bool = False) -> dict:
    """``confine``: the folders the run's spec paths must stay in (the service's data roots);
    ``tuned``: the point's fine-tuned model (``autocompress finetune``)."""
    with RunStore.open_reader(run_dir) as store:
        records = {r.result.candidate_id: r for r in store.records(("full",))}
        document = pareto_document(store)
        if tuned:
            return _export_tuned(store, point_id, out)
        spec = spec_from_frozen(store.meta("spec"), store.meta("spec_dir"), confine=confine)
    record = records.get(point_id)
    if record is None:
        front = ", ".join(p["id"] for p in document["points"]) or "none yet"
        raise UserInputError(f"point {point_id}: no fully evaluated candidate with that id in {run_dir}; "
                             f"the Pareto points are: {front}")
    session = Session.open(spec, say=say)
    model = build_candidate(session, channel_groups(session), record.candidate)
    try:
        size = export_compressed(model, out)
    except OSError as error:
        raise UserInputError(f"cannot write {out}: {error}") from None
    point = next((p for p in document["points"] if p["id"] == point_id), None)
    return {"path": str(Path(out).resolve()), "file_bytes": size, "memory_bytes": footprint(model),
            "accuracy": record.result.accuracy, "pareto": point is not None,
            "early_stopped": record.result.early_stopped, "stop": record.result.stop, "images": record.result.images,
            "holdout": None if point is None else point.get("holdout"), "recommended": point_id == document["best"],
            "limit": (document.get("constraints") or {}).get("max_drop_points")}


def _export_tuned(store: RunStore, point_id: str, out: str | os.PathLike) -> dict:
    """Copy the tuned file the fine-tuning measured (checked to load first)."""
    from autocompress.atomic import atomic_write
    from autocompress.compress import load_compressed
    from autocompress.engine.finetune import META, TUNED, tune_dir

    entry = (store.meta(META) or {}).get(point_id)
    if entry is None or entry.get("state") != "done":
        tuned = ", ".join(k for k, v in (store.meta(META) or {}).items() if v.get("state") == "done") or "none"
        state = "" if entry is None else f" (its fine-tuning is {entry.get('state')}: run `autocompress finetune` again)"
        raise UserInputError(f"point {point_id} (tuned): no finished fine-tuning of that point in {store.run_dir}"
                             f"{state}; fine-tuned points: {tuned}")
    source = tune_dir(store.run_dir, point_id) / TUNED
    model = load_compressed(source)  # a damaged file is refused here, not written out
    try:
        path = atomic_write(out, lambda tmp: shutil.copyfile(source, tmp))
    except OSError as error:
        raise UserInputError(f"cannot write {out}: {error}") from None
    return {"path": str(path.resolve()), "file_bytes": path.stat().st_size, "memory_bytes": footprint(model),
            "accuracy": entry["accuracy"], "accuracy_before": entry["accuracy_before"], "tuned": True,
            "pareto": True, "early_stopped": False, "images": entry["images"]}
