"""``pareto.json``: what a search returns, built from the run store alone.

The same function serves the end of a search, ``autocompress pareto RUN_DIR`` (also
while the search runs: the set so far) and the HTTP service. Schema in the README.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from autocompress._atomic import atomic_write
from autocompress.search.results import Constraints, Result, best_feasible, pareto_set

FORMAT = "autocompress-pareto-v1"


def _point(result: Result, candidate: dict | None) -> dict:
    return {
        "id": result.candidate_id,
        "accuracy": result.accuracy,
        "accuracy_drop": result.accuracy_drop,
        "memory_bytes": result.memory_bytes,
        "memory_saving": result.memory_saving,
        "feasible": result.feasible,
        "proxy": result.drift,
        "gate": result.gate,
        "config": candidate,
    }


def best_summary(results) -> dict | None:
    """The best feasible point of ``results`` as status and progress show it."""
    best = best_feasible(results)
    return None if best is None else {
        "id": best.candidate_id, "memory_bytes": best.memory_bytes, "memory_saving": best.memory_saving,
        "accuracy": best.accuracy, "accuracy_drop": best.accuracy_drop}


def run_constraints(store) -> Constraints | None:
    """The constraints of a run (None until its baseline accuracy is measured)."""
    values = store.meta("constraints")
    return None if values is None else Constraints(**values)


def run_state(store) -> str:
    """running, done, interrupted, failed, or starting (no session yet)."""
    sessions = store.sessions()
    if not sessions:
        return "starting"
    state = sessions[-1]["state"]
    if state == "running" and not store.driver_alive():
        return "interrupted"  # the driver died without ending its session (killed)
    return state


def pareto_document(store) -> dict:
    """The JSON document of a run, from its store."""
    spec = store.meta("spec")
    space = store.meta("space", {})
    constraints = run_constraints(store)
    sessions = store.sessions()
    progress = sessions[-1]["progress"] if sessions else {}
    fulls = store.records(("full",))
    candidates = {r.result.candidate_id: r.candidate for r in fulls}
    results = [r.result for r in fulls]
    document = {
        "format": FORMAT,
        "spec": spec["name"],
        "run_dir": str(store.run_dir),
        "state": run_state(store),
        "baseline": None,
        "constraints": None,
        "best": None,
        "points": [],
        "near_misses": [],
        "hypervolume": 0.0,
    }
    if constraints is not None:
        pareto = pareto_set(results, constraints)
        document.update({
            "baseline": {"accuracy": constraints.baseline_accuracy, "memory_bytes": constraints.baseline_bytes},
            "constraints": {
                "max_drop_points": constraints.max_drop_points,
                "accuracy": spec["constraints"]["accuracy"],
                "min_saving": constraints.min_saving,
                "max_bytes": constraints.max_bytes,
            },
            "best": pareto.best.candidate_id if pareto.best else None,
            "points": [_point(r, candidates.get(r.candidate_id)) for r in pareto.points],
            "near_misses": [_point(r, candidates.get(r.candidate_id)) for r in pareto.near_misses],
            "hypervolume": pareto.hypervolume,
        })
    document["statistics"] = {
        "full_evaluations": progress.get("full_evaluations", len(fulls)),
        "proxy_evaluations": progress.get("proxy_evaluations", 0),
        "gated_out": progress.get("gated_out", 0),
        "failed": progress.get("failed", 0),
        "retries": len(store.events("retry")),
        "workers_replaced": len(store.events("worker-replaced")),
        "wall_seconds": round(progress.get("wall_seconds", 0.0), 3),
        "stopped_by": progress.get("stopped_by", ""),
        "max_full_evaluations": progress.get("max_full_evaluations"),
        "sessions": len(sessions),
        "strategy": spec["strategy"]["name"],
        "seed": spec["strategy"].get("seed"),
        "granularity": space.get("granularity"),
        "dimensions": len(space.get("dimensions", [])),
        "workers": sessions[-1]["workers"] if sessions else None,
        "executor": sessions[-1]["executor"] if sessions else None,
    }
    return document


def write_pareto(path: str | os.PathLike, document: dict) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2)))
