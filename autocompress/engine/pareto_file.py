"""``pareto.json``: what a search returns, written atomically into the run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from autocompress._atomic import atomic_write

FORMAT = "autocompress-pareto-v1"


def _point(result, candidate) -> dict:
    return {
        "id": result.candidate_id,
        "accuracy": result.accuracy,
        "accuracy_drop": result.accuracy_drop,
        "memory_bytes": result.memory_bytes,
        "memory_saving": result.memory_saving,
        "feasible": result.feasible,
        "drift": result.drift,
        "config": candidate.to_dict() if candidate is not None else None,
    }


def pareto_document(spec, outcome) -> dict:
    """The JSON document of a finished search (schema in the README, "pareto.json")."""
    c = outcome.constraints
    pareto = outcome.pareto
    return {
        "format": FORMAT,
        "spec": spec.name,
        "baseline": {"accuracy": c.baseline_accuracy, "memory_bytes": c.baseline_bytes},
        "constraints": {
            "max_drop_points": c.max_drop_points,
            "accuracy": spec.constraints.accuracy.model_dump(),
            "min_saving": c.min_saving,
            "max_bytes": c.max_bytes,
        },
        "best": pareto.best.candidate_id if pareto.best else None,
        "points": [_point(r, outcome.candidates.get(r.candidate_id)) for r in pareto.points],
        "near_misses": [_point(r, outcome.candidates.get(r.candidate_id)) for r in pareto.near_misses],
        "hypervolume": pareto.hypervolume,
        "statistics": {
            "full_evaluations": outcome.stats.full_evaluations,
            "proxy_evaluations": outcome.stats.probes,
            "gated_out": outcome.stats.gated_out,
            "failed": outcome.stats.failed,
            "wall_seconds": round(outcome.stats.seconds, 3),
            "stopped_by": outcome.stats.stopped_by,
            "strategy": spec.strategy.name,
            "seed": spec.strategy.seed,
            "granularity": outcome.space.granularity,
            "dimensions": len(outcome.space.dims),
        },
    }


def write_pareto(path: str | os.PathLike, document: dict) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2)))
