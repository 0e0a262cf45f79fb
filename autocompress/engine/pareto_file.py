"""``pareto.json``: what a search returns, built from the run store alone.

The same function serves the end of a search, ``autocompress pareto RUN_DIR`` (also
while the search runs: the set so far) and the HTTP service. Schema in the README.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from autocompress.atomic import atomic_write
from autocompress.engine.progress import Progress
from autocompress.search import Result, pareto_set

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
        "images": result.images,
        "energy_mj": result.energy_mj,
        "synops": result.synops,
        "firing_rate": result.firing_rate,
        "latency_ms": result.latency_ms,
        "latency_batch_ms": result.latency_batch_ms,
        "config": candidate,
    }


def _held_out(point: dict, held: dict | None, constraints) -> None:
    """Add a point's held-out measurement (None until it is measured) to its entry."""
    if held is None:
        return
    measured, base = held["results"].get(point["id"]), held["results"].get("baseline")
    point["holdout"] = None if measured is None or base is None else {
        "accuracy": measured["accuracy"],
        "accuracy_drop": base["accuracy"] - measured["accuracy"],
        "images": measured["total"],
        "feasible": point["feasible"] and base["accuracy"] - measured["accuracy"] <= constraints.max_drop_points,
    }


_TUNED_FIELDS = ("state", "epoch", "epochs", "accuracy_before", "accuracy", "accuracy_drop", "feasible_before",
                 "feasible", "images", "holdout", "memory_bytes", "energy_mj_before", "energy_mj", "synops",
                 "firing_rate", "file", "file_bytes", "seconds", "workers")


def _tuned(document: dict, results: list[Result], candidates: dict, tuned: dict, constraints) -> dict:
    """The fine-tuned points (each Pareto point or near miss that has one gets its
    ``tuned`` entry) and the tuned front: the Pareto set of every exact full evaluation,
    a fine-tuned candidate counted at its tuned accuracy."""
    finished = {cid: entry for cid, entry in tuned.items() if entry.get("state") == "done"}
    for point in document["points"] + document["near_misses"]:
        if point["id"] in tuned:
            point["tuned"] = {key: tuned[point["id"]].get(key) for key in _TUNED_FIELDS}
    merged = []
    for result in results:
        entry = finished.get(result.candidate_id)
        if entry is not None and not result.early_stopped:
            result = replace(result, accuracy=entry["accuracy"], accuracy_drop=entry["accuracy_drop"],
                             feasible=entry["feasible"], energy_mj=entry.get("energy_mj", result.energy_mj),
                             synops=entry.get("synops", result.synops))
        merged.append(result)
    front = pareto_set(merged, constraints)
    points = []
    for result in front.points:
        point = _point(result, candidates.get(result.candidate_id))
        point["tuned"] = result.candidate_id in finished
        points.append(point)
    return {"points": points, "best": front.best.candidate_id if front.best else None,
            "hypervolume": front.hypervolume,
            "finetuned": {cid: {key: entry.get(key) for key in _TUNED_FIELDS} for cid, entry in tuned.items()}}


def _baseline_energy(store) -> dict:
    """The uncompressed model's spikes and energy per image (runs of versions before 0.17: none)."""
    energy = store.meta("baseline_energy") or {}
    return {"energy_mj": energy.get("energy_mj"), "synops": energy.get("synops"), "macs": energy.get("macs"),
            "firing_rate": energy.get("firing_rate"), "latency_ms": energy.get("latency_ms"),
            "latency_batch_ms": energy.get("latency_batch_ms")}


def _stopped(result: Result) -> dict:
    """An early-stopped candidate: certainly infeasible, its accuracy an estimate."""
    return {
        "id": result.candidate_id,
        "images": result.images,
        "accuracy_estimate": result.accuracy,
        "accuracy_drop_at_least": result.drop_bound,
        "memory_bytes": result.memory_bytes,
        "memory_saving": result.memory_saving,
        "proxy": result.drift,
    }


def sensitivity(store) -> list[dict]:
    """Every candidate of the run that moved one dimension alone (what PSViT's and
    PrimeSVT's sensitivity analysis measures, and what tpe/nsga2's warm start and
    prioritized probe): its dimension, choice, footprint, drift and, when fully
    evaluated, accuracy drop; by dimension, then from the least aggressive choice."""
    space, units = store.meta("space") or {}, store.meta("space_units")
    if not units:
        return []
    dims = [(name, kind, choices) for name, kind, choices in space.get("dimensions", []) if name in units]
    rows: dict[tuple[str, int], dict] = {}
    for record in store.records(("probe", "full", "gate")):
        moved = []
        for name, kind, choices in dims:
            values = {record.candidate.get(kind, {}).get(unit, choices[0]) for unit in units[name]}
            if len(values) != 1:
                moved = None
                break
            value = values.pop()
            if value != choices[0]:
                moved.append((name, kind, choices, value))
        if not moved or len(moved) != 1 or moved[0][3] not in moved[0][2]:
            continue
        name, kind, choices, value = moved[0]
        result = record.result
        row = rows.setdefault((name, choices.index(value)), {
            "dimension": name, "kind": kind, "choice": value, "memory_bytes": result.memory_bytes,
            "proxy": result.drift, "accuracy_drop": None})
        if result.evaluated and not result.early_stopped:
            row["accuracy_drop"] = result.accuracy_drop
    order = {name: i for i, (name, _, _) in enumerate(dims)}
    return [rows[key] for key in sorted(rows, key=lambda k: (order[k[0]], k[1]))]


def pareto_document(store) -> dict:
    """The JSON document of a run, from its store."""
    spec = store.meta("spec")
    space = store.meta("space", {})
    constraints = store.constraints()
    sessions = store.sessions()
    stored = (sessions[-1]["progress"] if sessions else None) or {}
    progress = Progress.from_dict(stored)
    fulls = store.records(("full",))
    candidates = {r.result.candidate_id: r.candidate for r in fulls}
    results = [r.result for r in fulls]
    document = {
        "format": FORMAT,
        "spec": spec["name"],
        "run_dir": str(store.run_dir),
        "state": store.state(),
        "baseline": None,
        "constraints": None,
        "best": None,
        "points": [],
        "near_misses": [],
        "early_stopped": [_stopped(r) for r in results if r.early_stopped],
        "hypervolume": 0.0,
        "sensitivity": sensitivity(store),
        "holdout": None,
        "tuned": None,
    }
    if constraints is not None:
        pareto = pareto_set(results, constraints)
        document.update({
            "baseline": {"accuracy": constraints.baseline_accuracy, "memory_bytes": constraints.baseline_bytes,
                         **_baseline_energy(store)},
            "constraints": {
                "max_drop_points": constraints.max_drop_points,
                "accuracy": spec["constraints"]["accuracy"],
                "min_saving": constraints.min_saving,
                "max_bytes": constraints.max_bytes,
                "energy": spec["constraints"].get("energy"),
                "max_energy_mj": constraints.max_energy_mj,
                "max_latency_ms": constraints.max_latency_ms,
            },
            "best": pareto.best.candidate_id if pareto.best else None,
            "points": [_point(r, candidates.get(r.candidate_id)) for r in pareto.points],
            "near_misses": [_point(r, candidates.get(r.candidate_id)) for r in pareto.near_misses],
            "hypervolume": pareto.hypervolume,
        })
        base_energy = document["baseline"].get("energy_mj")
        for point in document["points"] + document["near_misses"]:
            point["energy_saving"] = (None if not base_energy or point["energy_mj"] is None
                                      else 1 - point["energy_mj"] / base_energy)
        held = store.meta("holdout")
        if held is not None:
            base = held["results"].get("baseline")
            document["holdout"] = {"images": held["images"], "fraction": spec["data"]["validation"].get("holdout"),
                                   "baseline_accuracy": None if base is None else base["accuracy"]}
            for point in document["points"]:
                _held_out(point, held, constraints)
        tuned = store.meta("finetune") or {}
        if tuned:
            document["tuned"] = _tuned(document, results, candidates, tuned, constraints)
    document["statistics"] = {
        # a session of an earlier version that ended before its search began stored no count
        "full_evaluations": progress.full_evaluations if "full_evaluations" in stored else len(fulls),
        "proxy_evaluations": progress.proxy_evaluations,
        # a resumed search replays the probes its strategy asks for again; one a killed session made for a
        # request the replay does not repeat stays stored, unused
        "stored_probes": store.counts()["probe"],
        "gated_out": progress.gated_out,
        "failed": progress.failed,
        "retries": len(store.events("retry")),
        "workers_replaced": len(store.events("worker-replaced")),
        "wall_seconds": round(progress.wall_seconds, 3),
        "early_stopped": sum(r.early_stopped for r in results),
        "validation_images": sum(r.images or 0 for r in results),
        "validation": store.meta("validation"),
        "stopped_by": progress.stopped_by,
        "max_full_evaluations": progress.max_full_evaluations,
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
