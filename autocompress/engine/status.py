"""``autocompress status``: a run's state and progress, read from its store while the
driver writes it (SQLite WAL lets readers in; the driver's heartbeat updates the
session row about once a second)."""

from __future__ import annotations

import os
import time

from autocompress.engine.pareto_file import run_best
from autocompress.engine.progress import session_progress
from autocompress.engine.store import RunStore


def run_status(run_dir: str | os.PathLike) -> dict:
    with RunStore.open_reader(run_dir) as store:
        spec = store.meta("spec")
        sessions = store.sessions()
        last = sessions[-1] if sessions else {}
        state = store.state()
        best, holdout = run_best(store)
        progress = session_progress(sessions, state)
        hint = {
            "interrupted": f"continue it with `autocompress resume {store.run_dir}`",
            "failed": "see the events below; fix the cause, then `autocompress resume` it",
        }.get(state)
        return {
            "run_dir": str(store.run_dir),
            "spec": spec["name"],
            "strategy": spec["strategy"]["name"],
            "state": state,
            "stopped_by": last.get("stopped_by"),
            "hint": hint,
            "sessions": len(sessions),
            "command": last.get("command"),
            "pid": last.get("pid"),
            "host": last.get("host"),
            "executor": last.get("executor"),
            "worker_count": last.get("workers"),
            "updated_ago": time.time() - last["updated_at"] if last else 0.0,
            "progress": progress.to_dict(),
            "stored": store.counts(),
            "retries": len(store.events("retry")),
            "best": best,
            "holdout": holdout,
            "workers": store.workers(),
            "events": store.events(),
            "finetune": finetune_status(store),
        }


def finetune_status(store) -> dict:
    """Each fine-tuned (or fine-tuning) point: state, epoch, the last epoch's loss and
    validation accuracy, and the accuracy before and after."""
    from autocompress.engine.store import read_driver

    entries = store.meta("finetune") or {}
    alive = store.driver_alive() and read_driver(store.run_dir) is not None
    shown = {}
    for point, entry in entries.items():
        state = entry.get("state")
        if state == "running" and not alive:
            state = "interrupted"  # killed: `autocompress finetune` again resumes from its last epoch
        last = (entry.get("history") or [{}])[-1]
        shown[point] = {"state": state, "epoch": entry.get("epoch"), "epochs": entry.get("epochs"),
                        "loss": last.get("loss"), "validation_accuracy": last.get("accuracy"),
                        "accuracy_before": entry.get("accuracy_before"), "accuracy": entry.get("accuracy"),
                        "feasible_before": entry.get("feasible_before"), "feasible": entry.get("feasible"),
                        "memory_bytes": entry.get("memory_bytes")}
    return shown
