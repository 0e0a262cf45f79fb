"""``autocompress status``: a run's state and progress, read from its store while the
driver writes it (SQLite WAL lets readers in; the driver's heartbeat updates the
session row about once a second)."""

from __future__ import annotations

import os
import time

from autocompress.engine.progress import best_summary, session_progress
from autocompress.engine.store import RunStore


def run_status(run_dir: str | os.PathLike) -> dict:
    with RunStore.open_reader(run_dir) as store:
        spec = store.meta("spec")
        sessions = store.sessions()
        last = sessions[-1] if sessions else {}
        state = store.state()
        best = best_summary(r.result for r in store.records(("full",)))
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
            "workers": store.workers(),
            "events": store.events(),
        }
