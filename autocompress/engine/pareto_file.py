"""``pareto.json``: what a search returns, built from the run store alone.

The same function serves the end of a search, ``autocompress pareto RUN_DIR`` (also
while the search runs: the set so far) and the HTTP service. Schema in the README.
"""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from pathlib import Path

from autocompress.atomic import atomic_write_json
from autocompress.engine.progress import Progress, best_summary
from autocompress.searching import Result, paired_counts, pareto_set, unpack

FORMAT = "autocompress-pareto-v1"

# What each top-level key of pareto.json holds: docs/reference/pareto-json.md is generated from this
# (tests/test_docs.py checks that a run's document has exactly these keys).
FORMAT_DOC: dict[str, str] = {
    "format": "the format's name and version: `autocompress-pareto-v1`",
    "spec": "the spec's name",
    "run_dir": "the run directory (absolute)",
    "state": "`running`, `done`, `interrupted` (killed or Ctrl-C: resume it) or `failed`",
    "baseline": "`accuracy` (top-1 %), `memory_bytes` of the uncompressed model; `energy_mj`, `synops`, `macs`, `firing_rate` per image, `latency_ms`, `latency_batch_ms` (null unless `latency.measure`) (see \"Spikes and energy\"; null for runs of earlier versions)",
    "constraints": "`max_drop_points` (absolute, after converting a relative limit), `accuracy` (as in the spec), `min_saving`, `max_bytes`, `energy` (as in the spec, or null), `max_energy_mj` (the energy limit in force), `max_latency_ms`",
    "best": "id of the recommended point, or null: with a held-out split, once it is measured, the point the held-out test recommends (see \"Selection and held-out accuracy\"); else the best feasible point",
    "best_selection": "id of the best feasible point on the selection images (the same as `best` without a held-out split), or null",
    "points": "the Pareto set of every fully evaluated candidate of the run (validated on every image), smallest memory first: `id` (for `export --point`), `accuracy` (top-1 %), `accuracy_drop` (points), `drop_upper` (the upper confidence bound on the drop that feasibility was decided on; null with `accuracy.confidence: null` and for runs stored before the field existed), `memory_bytes`, `memory_saving` (fraction), `feasible`, `proxy` (the membrane-potential drift; null with the proxy off), `gate` (`pass`, or `off`), `images` (validation images the accuracy is over; null for runs stored before the field existed), `energy_mj`, `energy_saving`, `synops`, `firing_rate` (per image, from the candidate's probe), `latency_ms`, `latency_batch_ms`, `config` (`prune`: group -> rate, `bits`: layer -> bit-width; units not named keep the baseline)",
    "near_misses": "when nothing is feasible, the evaluated points closest to feasible, same fields",
    "holdout": "null without a held-out split (and until the search measures it); else `images`, `fraction`, `baseline_accuracy` (the base model on the held-out images), `confidence`, `decided` (every point the test reaches is measured), `nearest` (the first point that failed the held-out test: its `id` and held-out figures; null when none did), and every point gets `holdout`: `accuracy`, `accuracy_drop` (against that baseline), `images`, `worse`/`better` (held-out images the baseline got right and the point wrong, and the reverse), `drop_upper` (the drop's upper bound there), `feasible` (selection-feasible, and within the limit on the held-out images as the search decides: the bound); null until measured",
    "early_stopped": "candidates whose validation stopped early and stays an estimate (never points): `id`, `side` (`infeasible`: certainly beyond the accuracy limit; `feasible`: certainly within it); none is a point, the best or a near miss even at the most optimistic accuracy its bound allows, or it would have been completed, `images` (validated before the stop), `accuracy_estimate`, `accuracy_drop_at_least` and `accuracy_drop_at_most` (anytime-valid bounds on the drop over the whole selection set, points, each at evaluation.confidence), `memory_bytes`, `memory_saving`, `proxy`. A stopped candidate that would be reported is validated on its remaining images and is an exact point instead",
    "tuned": "null until a point is fine-tuned; else `finetuned`: per point id, `state` (`running`, `interrupted`, `done`), `epoch`, `epochs`, `accuracy_before`, `accuracy` (the tuned file's, on the same validation items as the search's), `accuracy_drop`, `feasible_before`, `feasible`, `images`, `holdout` (with a held-out split: the tuned `accuracy`, `accuracy_before`, `accuracy_drop` there), `memory_bytes` (unchanged), `energy_mj_before`, `energy_mj`, `synops`, `firing_rate` (the tuned model's spikes and energy, counted again: training changes the firing rates), `file`, `file_bytes`, `seconds`, `workers`; `points`: the tuned front, the Pareto set of every full evaluation with each fine-tuned candidate at its tuned accuracy (each with `tuned: true/false`); `best`: its best feasible point; `hypervolume`. Each Pareto point or near miss that was fine-tuned also carries its `tuned` entry",
    "hypervolume": "the area the Pareto points dominate in (memory saving, accuracy / baseline accuracy), both in [0, 1], against (0, 0): 1.0 would be a model of no size at the baseline's accuracy, the baseline itself scores 0",
    "sensitivity": "every candidate that moved one search dimension alone (probed or fully evaluated): `dimension`, `kind` (`prune` or `bits`), `choice` (rate or bit-width), `memory_bytes`, `proxy` (drift), `accuracy_drop` (null unless fully evaluated on every image); by dimension, least aggressive first",
    "statistics": "`full_evaluations` (including those of earlier sessions, and those stopped early), `early_stopped` (validations stopped early on either side, completed ones included), `stopped_feasible` (of them, as certainly within the limit), `completed` (stopped on either side, then validated on their remaining images because they would be reported), `validation_images` (images read by full evaluations), `validation` (`images`, `order_seed`, `shard_images` of the run), `proxy_evaluations`, `gated_out`, `failed`, `retries` (tasks sent again after their worker died), `workers_replaced`, `wall_seconds` (all sessions), `stopped_by` (one of `autocompress.searching.StopReason`: `strategy finished`, `strategy asked nothing`, `full-evaluation budget`, `probe budget`, `time budget`, `interrupted`, or `error: MESSAGE` for a failed session; the HTTP service shows `error` without the message), `max_full_evaluations`, `sessions`, `strategy`, `seed`, `granularity`, `dimensions`, `workers`, `executor` (`in-process` or `ray`)",
}


def _point(result: Result, candidate: dict | None) -> dict:
    return {
        "id": result.candidate_id,
        "accuracy": result.accuracy,
        "accuracy_drop": result.accuracy_drop,
        "drop_upper": result.drop_upper,  # the drop's upper confidence bound the search decided on (None: none)
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


def paired_with_baseline(base: dict | None, per_image, images: int) -> tuple[int | None, int | None]:
    """``(worse, better)``: images the baseline got right and a model wrong, and the
    reverse, from the baseline's stored measurement and the model's per-image correctness
    (None where either kept none: a measurement of an earlier version)."""
    if not base or "per_image" not in base or per_image is None:
        return None, None
    return paired_counts(unpack(base64.b64decode(base["per_image"]), images), per_image)


def _paired(measured: dict, base: dict, images: int) -> tuple[int | None, int | None]:
    """``paired_with_baseline`` for a stored held-out measurement."""
    mine = unpack(base64.b64decode(measured["per_image"]), images) if "per_image" in measured else None
    return paired_with_baseline(base, mine, images)


def _held_out(point: dict, held: dict | None, constraints) -> None:
    """Add a point's held-out measurement (None until it is measured) to its entry: its
    accuracy and drop there, the paired counts, the upper confidence bound on its drop, and
    whether it is feasible there (selection-feasible and, on the held-out images, within
    the limit as the search decides: the bound where the run decides with confidence)."""
    if held is None:
        return
    measured, base = held["results"].get(point["id"]), held["results"].get("baseline")
    if measured is None or base is None:
        point["holdout"] = None
        return
    drop = base["accuracy"] - measured["accuracy"]
    worse, better = _paired(measured, base, held["images"])
    upper = constraints.drop_upper(worse, better, measured["total"])
    point["holdout"] = {
        "accuracy": measured["accuracy"],
        "accuracy_drop": drop,
        "images": measured["total"],
        "worse": worse,
        "better": better,
        "drop_upper": upper,
        "feasible": bool(point["feasible"]) and (upper if upper is not None else drop)
        <= constraints.max_drop_points + 1e-9,
    }


def recommend(points: list[dict]) -> tuple[str | None, dict | None, bool]:
    """The recommended point of a run with a held-out split: ``(id, nearest, decided)``.

    A fixed-sequence test (the one Learn-then-Test uses to pick a model with risk control;
    Angelopoulos et al., 2021): the selection-feasible Pareto points, from the largest to
    the smallest (an order the held-out images played no part in), are tested one after
    the other on the held-out images; the recommended point is the last to pass before the
    first that fails. Each test runs at the full confidence with no correction for how
    many are made, because a test is only reached when every larger point passed: the
    chance that the recommended point breaks the limit on fresh images stays below
    ``1 - confidence``. Taking instead the smallest point that passes anywhere in the
    list would choose among them on the held-out images, the selection the split exists
    to remove. ``nearest``: the first point that failed (None when none did);
    ``decided``: False while a point of the sequence is not measured yet."""
    passed, failed, decided = _fixed_sequence(points, lambda measured: measured["feasible"])
    return (None if passed is None else passed["id"]), failed, decided


def measured_only(points: list[dict], limit: float) -> dict | None:
    """Where the fixed sequence of :func:`recommend` stops when each held-out test asks only
    that the measured drop be within ``limit`` (no confidence bound): the point to look at
    when no point can be shown within the limit, most often because the held-out images are
    too few for any bound to fall under it. Not a promise: on fresh images such a point
    breaks the limit far more often than ``1 - confidence``. None when none passes."""
    chosen, _, _ = _fixed_sequence(points, lambda measured: measured["accuracy_drop"] <= limit + 1e-9)
    return None if chosen is None else {"id": chosen["id"], **chosen["holdout"]}


def _fixed_sequence(points: list[dict], passes) -> tuple[dict | None, dict | None, bool]:
    """The walk both tests share: the selection-feasible points, largest memory first
    (``points`` is smallest first), each tested on its held-out figures by ``passes``.
    ``(the last point to pass, the first to fail, decided)``; ``decided`` is False when the
    walk met a point not measured on the held-out images yet."""
    last = None
    for point in reversed(points):
        if not point["feasible"]:
            continue
        measured = point.get("holdout")
        if measured is None:
            return last, None, False
        if not passes(measured):
            return last, point, True
        last = point
    return last, None, True


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
    """The uncompressed model's spikes and energy per image (none for runs stored before energy was counted)."""
    energy = store.meta("baseline_energy") or {}
    return {"energy_mj": energy.get("energy_mj"), "synops": energy.get("synops"), "macs": energy.get("macs"),
            "firing_rate": energy.get("firing_rate"), "latency_ms": energy.get("latency_ms"),
            "latency_batch_ms": energy.get("latency_batch_ms")}


def _stopped(result: Result) -> dict:
    """An early-stopped candidate: certainly on one side of the limit, its accuracy an estimate."""
    infeasible = result.stop != "feasible"  # stored before the feasible side stopped: infeasible
    return {
        "id": result.candidate_id,
        "side": "infeasible" if infeasible else "feasible",
        "images": result.images,
        "accuracy_estimate": result.accuracy,
        "accuracy_drop_at_least": result.drop_low if result.drop_low is not None else (
            result.drop_bound if infeasible else None),
        "accuracy_drop_at_most": result.drop_high,
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
        "best": None,  # the recommended point: with a held-out split, once it is measured, chosen on it
        "best_selection": None,  # the best feasible point on the images the search chose on
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
        document["best_selection"] = document["best"]
        held = store.meta("holdout")
        if held is not None:
            base = held["results"].get("baseline")
            document["holdout"] = {"images": held["images"], "fraction": spec["data"]["validation"].get("holdout"),
                                   "baseline_accuracy": None if base is None else base["accuracy"],
                                   "confidence": constraints.confidence}
            for point in document["points"]:
                _held_out(point, held, constraints)
            best, nearest, decided = recommend(document["points"])
            document["holdout"].update({
                "decided": decided,
                "nearest": None if nearest is None else {"id": nearest["id"], **nearest["holdout"]}})
            if decided:  # the held-out figure decides what is recommended
                document["best"] = best
                if best is None and constraints.confidence is not None:
                    document["holdout"]["measured_only"] = measured_only(document["points"],
                                                                         constraints.max_drop_points)
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
        "early_stopped": sum(r.early_stopped or r.stop is not None for r in results),
        "stopped_feasible": sum(r.stop == "feasible" for r in results),
        "completed": sum(r.stop is not None and not r.early_stopped for r in results),
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


def run_best(store) -> tuple[dict | None, dict | None]:
    """``(best, holdout)`` as ``status`` and the service show a run: the recommended point
    (None: none), and the run's held-out summary (None without a split or before it is
    measured). With a held-out test decided, the point is the one it recommends and its
    held-out figures come with it (``decided_on: "holdout"``); before, or without a split,
    it is the best feasible point on the selection images (``decided_on: "selection"``)."""
    if store.meta("holdout") is None:
        best = best_summary(r.result for r in store.records(("full",)))
        return (None if best is None else {**best, "decided_on": "selection"}), None
    document = pareto_document(store)
    held = document["holdout"]
    point = next((p for p in document["points"] if p["id"] == document["best"]), None)
    if point is None:
        return None, held
    best = {key: point.get(key) for key in ("memory_bytes", "memory_saving", "accuracy", "accuracy_drop", "energy_mj",
                                            "synops", "latency_ms")}
    # the held-out figures first (the ones to trust), the selection figures after them
    return {"id": point["id"], "decided_on": "holdout" if held.get("decided") else "selection",
            "holdout": point.get("holdout"), **best}, held


def recommendation_line(document: dict) -> str:
    """What a run recommends, in one line: with a held-out split, the held-out figures first."""
    held = document.get("holdout")
    limit = (document.get("constraints") or {}).get("max_drop_points")
    points = {p["id"]: p for p in document["points"]}
    if held and held.get("decided"):
        best = points.get(document["best"])
        if best is None:
            nearest = held.get("nearest")
            if nearest is None:
                return ("no point is feasible on the selection images, so none was tested on the held-out ones; "
                        "the near misses are in pareto.json")
            bound = "" if nearest.get("drop_upper") is None else f", at most {nearest['drop_upper']:+.2f}"
            line = (f"none of the chosen points stays within {limit:g} points on held-out images; nearest: "
                    f"{nearest['id']} (held-out drop {nearest['accuracy_drop']:+.2f}{bound}; "
                    f"{points[nearest['id']]['memory_bytes']:,} bytes). `autocompress finetune` can recover it")
            weak = held.get("measured_only")
            if weak is not None:  # nothing certified, but a point is within the limit as measured
                line += (f"; within the limit on the measured drop alone, not certified at "
                         f"{held['confidence']:.0%}: {weak['id']} ({points[weak['id']]['memory_bytes']:,} bytes, "
                         f"held-out drop {weak['accuracy_drop']:+.2f}"
                         + ("" if weak.get("drop_upper") is None else f", at most {weak['drop_upper']:+.2f}")
                         + f" on {weak['images']:,} images; more held-out images narrow the bound)")
            return line
        measured = best["holdout"]
        bound = "" if measured.get("drop_upper") is None else (
            f", at most {measured['drop_upper']:+.2f} at {held['confidence']:.0%} confidence")
        return (f"recommended point: {best['id']} (marked *): {best['memory_bytes']:,} bytes, "
                f"{best['memory_saving']:.1%} saved; held-out drop {measured['accuracy_drop']:+.2f}{bound} "
                f"({measured['images']:,} images); selection drop {best['accuracy_drop']:+.2f}")
    if document["best"] is None:
        return "no feasible point found; the near misses are in pareto.json"
    line = f"best feasible point: {document['best']} (marked *)"
    if held and not held.get("decided"):
        line += " on the selection images; the held-out test is not complete yet"
    return line


def write_pareto(path: str | os.PathLike, document: dict) -> Path:
    return atomic_write_json(path, document, indent=2)
