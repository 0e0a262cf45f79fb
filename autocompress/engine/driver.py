"""The driver: one process per search that owns the strategy, the gate and the run
store, and hands tasks to an executor (in this process, or Ray actors).

``start_search`` creates a run directory and searches; ``resume_search`` continues a
run directory's search after a kill, an interrupt or a raised budget. Both rebuild
the strategy by replaying the run's journal through the search loop: recorded results
are reused (nothing is evaluated twice), tasks that were in flight are asked for again.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import yaml

from autocompress.atomic import atomic_write_json
from autocompress.console import log_info
from autocompress.engine.executors import RayExecutor, check_reachable
from autocompress.engine.meta import Budget, Execution, ValidationPlan
from autocompress.engine.holdout import measure_holdout
from autocompress.engine.pareto_file import pareto_document, write_pareto
from autocompress.engine.pipeline import Setup
from autocompress.engine.progress import Progress
from autocompress.engine.store import RunStore, StoreError
from autocompress.engine.worker import Worker, spec_from_frozen
from autocompress.errors import AutocompressError, UserInputError
from autocompress.limits import Limits, check_limits
from autocompress.searching import (
    Completion,
    Constraints,
    EarlyStopping,
    Gate,
    LocalExecutor,
    SearchLoop,
    StopReason,
    default_shard_images,
    drive,
    shard_bounds,
    unpack,
)

Say = Callable[[str], None]


@dataclass
class RunOptions:
    """Overrides of the spec's execution and budget for one session of a run."""

    workers: int | None = None
    ray_address: str | None = None
    max_full_evaluations: int | None = None
    max_hours: float | None = None
    max_retries: int = 2  # times a task is sent again after its worker died
    data_roots: list[str] | None = None  # spec paths must stay inside these (the service's jobs)
    limits: Limits | None = None  # the caps (autocompress.limits); None: the defaults, or a resumed run's own


def check_caps(spec, options: RunOptions, limits: Limits, source: str) -> None:
    """The spec, and this session's overrides of it, within the caps in force."""
    check_limits(spec, limits, source=source, session=[
        ("budget.max_full_evaluations", "--max-full-evaluations", options.max_full_evaluations),
        ("budget.max_hours", "--max-hours", options.max_hours),
        ("execution.workers", "--workers", options.workers)])


def frozen_spec(spec) -> dict:
    """The spec as the run directory keeps it: plain JSON, every path absolute."""
    return spec.model_dump(mode="json")


def start_search(spec, *, run_dir: str | Path | None = None, options: RunOptions | None = None,
                 spec_file: str | None = None, say: Say = log_info,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_end: Callable[[Path], object] | None = None) -> dict:
    """Create the run directory and search; return the pareto.json document.
    ``on_progress`` gets the progress when the session starts and after each completed task;
    ``on_end`` gets the run directory once pareto.json is written, however the session ended
    (the CLI and the API draw the report there)."""
    run_dir = Path(run_dir or spec.output.run_dir).resolve()
    data = frozen_spec(spec)
    data["output"]["run_dir"] = str(run_dir)
    beside = getattr(spec.model, "_spec_dir", None)  # a custom factory's folder, for a spec given as an object
    spec_dir = str(Path(spec_file).resolve().parent) if spec_file else (str(beside) if beside else None)
    spec_from_frozen(data, spec_dir, check_paths=False)  # the frozen form must read back (it always should)
    options = options or RunOptions()
    limits = options.limits or Limits()
    check_caps(spec, options, limits, spec_file or "spec")
    _check_local_workers(spec.execution.workers if options.workers is None else options.workers,
                         options.ray_address or spec.execution.ray_address)
    store = RunStore.create(run_dir, {"spec": data, "spec_file": spec_file, "spec_dir": spec_dir,
                                      "limits": limits.overrides()})
    try:
        (run_dir / "spec.yaml").write_text(
            "# the spec this run was started with (frozen; `autocompress resume` reads it)\n"
            + yaml.safe_dump(data, sort_keys=False))
        return _Driver(store, spec, "search", options, say, on_progress, on_end).run()
    finally:
        store.close()


def resume_search(run_dir: str | Path, *, options: RunOptions | None = None, say: Say = log_info,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_end: Callable[[Path], object] | None = None) -> dict:
    """Continue the search of an existing run directory (``on_progress``, ``on_end``: as
    :func:`start_search`)."""
    store = RunStore.open_writer(Path(run_dir).resolve())
    try:
        options = options or RunOptions()
        spec = spec_from_frozen(store.meta("spec"), store.meta("spec_dir"), confine=options.data_roots)
        check_caps(spec, options, store.limits_in_force(options.limits), str(store.run_dir))
        return _Driver(store, spec, "resume", options, say, on_progress, on_end).run()
    finally:
        store.close()


def _check_local_workers(workers: int, address: str | None) -> None:
    """A local Ray gets this machine's CPUs: refuse more workers before a run directory
    is made (the executor checks a cluster's CPUs and GPUs when it joins)."""
    cpus = os.cpu_count() or 1
    if workers > cpus and not address and not os.environ.get("RAY_ADDRESS"):
        raise UserInputError(f"execution.workers: {workers} workers need {workers} CPUs, but this machine has "
                             f"{cpus}; lower the workers (execution.workers, --workers), or join a cluster (execution.ray_address, --ray-address)")


def _budget(store: RunStore, spec, options: RunOptions) -> tuple[int, float | None]:
    """The run's budget: the spec's, unless a session raised (or lowered) it; kept in the store."""
    saved = store.get(Budget)
    max_full = options.max_full_evaluations or (saved and saved.max_full_evaluations) or spec.budget.max_full_evaluations
    max_hours = options.max_hours or (saved and saved.max_hours) or spec.budget.max_hours
    store.put(Budget(max_full_evaluations=max_full, max_hours=max_hours))
    return max_full, max_hours


def _store_lost(store: RunStore) -> None:
    """``store.sqlite`` was deleted or replaced under the driver: keep what this session
    had stored in a copy beside it, say where, and stop with an error."""
    store.stop_heartbeat()
    saved = ""
    try:
        copy = store.save_copy(store.run_dir / f"store.sqlite.recovered-{time.strftime('%Y%m%d-%H%M%S')}")
        saved = (f"; what was stored until then is saved as {copy} (rename it to {store.path.name} to resume "
                 "the run from it)")
    except Exception as error:  # the run directory itself may be gone
        saved = f"; its content could not be saved ({error})"
    raise StoreError(f"{store.path} was deleted or replaced while the search ran, so it stopped{saved}")


def _execution(store: RunStore, spec, options: RunOptions) -> tuple[int, str | None]:
    """Workers and Ray address: the spec's, unless a session overrode them (a resume keeps them)."""
    saved = store.get(Execution) or Execution(workers=spec.execution.workers, ray_address=spec.execution.ray_address)
    workers = options.workers if options.workers is not None else saved.workers
    address = options.ray_address if options.ray_address is not None else saved.ray_address
    store.put(Execution(workers=workers, ray_address=address))
    return workers, address


def _validation_plan(store: RunStore, spec, count: int) -> dict:
    """The run's validation order and shards, fixed when it starts (a resume with other
    workers shards and stops early exactly as before); a run started by a version without
    them gets them now."""
    plan = store.get(ValidationPlan)
    if plan is None:
        plan = ValidationPlan(images=count, order_seed=spec.evaluation.order_seed,
                              shard_images=spec.evaluation.shard_images or default_shard_images(count,
                                                                                                spec.data.batch_size))
        store.put(plan)
    elif plan.images != count:
        raise AutocompressError(
            f"{store.run_dir}: the search's validation images (the selection split, with a held-out one) number "
            f"{count} now but were {plan.images} when this run started (the data changed); its results cannot "
            "be compared. Start a new run with `autocompress search`")
    return plan.model_dump(mode="json")


def _check_autocast(measured: dict, spec) -> None:
    """Autocast is used only if the baseline's top-1 under it matches FP32's within the tolerance."""
    if measured.get("autocast", "off") == "off" or "fp32_accuracy" not in measured:
        return
    gap = abs(measured["accuracy"] - measured["fp32_accuracy"])
    tolerance = spec.evaluation.autocast_tolerance
    if gap > tolerance:
        raise UserInputError(
            f"evaluation.autocast {measured['autocast']}: the baseline's top-1 is {measured['accuracy']:.3f} % under "
            f"autocast and {measured['fp32_accuracy']:.3f} % in FP32, {gap:.3f} points apart (more than "
            f"evaluation.autocast_tolerance {tolerance:g}); set evaluation.autocast: off, or raise the tolerance")


def _space_fingerprint(space) -> dict:
    return {"granularity": space.granularity,
            "dimensions": [[d.name, d.kind, list(d.choices)] for d in space.dims]}


SPLITS_NAME = "splits.json"


def _write_splits(run_dir: Path, session) -> None:
    """``splits.json`` in the run directory: how many validation items the search chooses
    on, which are held out (item numbers and, for an image folder, files) and where the
    calibration images came from, so a user can check both themselves. Written once: a
    resume finds it."""
    path = Path(run_dir) / SPLITS_NAME
    if path.exists():
        return
    data, validation = session.data, session.spec.data.validation
    held = session.holdout_order()
    document = {
        "validation": data.description,
        "selection_images": len(session.evaluation_order()),
        "holdout": {"fraction": validation.holdout, "seed": validation.holdout_seed, "items": [int(i) for i in held],
                    "files": data.validation_sources(held)} if len(held) else None,
        "calibration": {"images": int(len(data.calibration_labels)), "sources": list(data.calibration_sources)},
    }
    atomic_write_json(path, document, indent=1)


def _too_few_images(constraints: Constraints, selection: int, held: int) -> list[str]:
    """What a decision with confidence cannot show on so few images: even a candidate that
    gets every image right that the baseline gets right is bounded above the limit."""
    if constraints.confidence is None:
        return []
    out = []
    for images, what in ((selection, "selection"), (held, "held-out")):
        floor = constraints.drop_upper(0, 0, images) if images else None
        if floor is not None and floor > constraints.max_drop_points:
            out.append(
                f"{images:,} {what} images cannot show any candidate within {constraints.max_drop_points:g} points at "
                f"{constraints.confidence:.0%} confidence (one that matches the baseline image for image is bounded "
                f"at +{floor:.2f}), so " + ("no candidate will be feasible" if what == "selection" else
                                            "no point can pass the held-out test")
                + ": give more validation images, a wider limit or a lower constraints.accuracy.confidence (null "
                "decides on the measured drop, optimistic)")
    return out


class _Driver:
    """One session of a run: set the search up, drive it on an executor, journal every
    result in the store, and leave pareto.json when it ends, however it ends."""

    def __init__(self, store: RunStore, spec, command: str, options: RunOptions, say: Say,
                 on_progress: Callable[[Progress], None] | None, on_end: Callable[[Path], object] | None):
        self.store, self.spec, self.command, self.say = store, spec, command, say
        self.on_progress, self.on_end = on_progress, on_end
        self.workers, self.address = _execution(store, spec, options)
        _check_local_workers(self.workers, self.address)
        if self.address and self.workers == 0:
            raise UserInputError("execution.ray_address is set but execution.workers is 0; "
                                 "give the number of Ray workers (execution.workers, --workers N)")
        if self.address:
            check_reachable(self.address)  # before the model and the data load: a stopped head is said at once
        self.max_retries = options.max_retries
        self.data_roots = options.data_roots
        self.max_full, self.max_hours = _budget(store, spec, options)
        self.executor = None  # LocalExecutor or RayExecutor, once the session's model is open
        self.loop: SearchLoop | None = None
        self.gate: Gate | None = None
        self.gated_before: set[str] = set()
        self._last_beat = 0.0

    def progress(self) -> Progress:
        if self.loop is None:  # ended before its search began: what earlier sessions stored
            return Progress(full_evaluations=self.store.counts()["full"], max_full_evaluations=self.max_full)
        return Progress.of_loop(self.loop, retries=len(self.store.events("retry")),
                                workers_replaced=len(self.store.events("worker-replaced")), max_full=self.max_full)

    def record(self, kind, candidate, result, *, worker: str | None = None, attempts: int = 1) -> None:
        if kind == "completed":  # a validation stopped as feasible, now over every image: replaces the estimate
            self.store.complete(result, worker=worker)
            return
        if kind == "gate" and result.candidate_id in self.gated_before:
            return  # decided again while replaying: recorded once
        assert self.gate is not None, "records come from the loop, which runs with its gate"
        self.store.record(kind, candidate.to_dict(), result, gate_threshold=self.gate.current_threshold(),
                          worker=worker, attempts=attempts)

    def completed(self, _done: Completion) -> None:
        progress = self.progress()
        self._beat(progress)  # status and the service see every result as soon as it is stored
        if self.on_progress is not None:
            self.on_progress(progress)

    def idle(self) -> None:
        if time.monotonic() - self._last_beat >= 1.0:
            self._beat(self.progress())

    def _beat(self, progress: Progress) -> None:
        self.store.heartbeat(progress.to_dict())
        self._last_beat = time.monotonic()

    def _executor(self, setup: Setup, proxy: bool):
        store, spec = self.store, self.spec
        if self.workers == 0:
            return LocalExecutor(Worker(setup.session, setup.groups, proxy=proxy, run_dir=str(store.run_dir)),
                                 on_worker=store.worker)
        self.say(f"starting {self.workers} Ray worker{'s' if self.workers > 1 else ''} "
                 f"({'cluster at ' + self.address if self.address else 'local Ray'})")
        return RayExecutor(frozen_spec(spec), store.meta("spec_dir"), workers=self.workers,
                           device=spec.execution.device, address=self.address, proxy=proxy,
                           run_dir=str(store.run_dir), max_retries=self.max_retries, on_event=store.event,
                           on_worker=store.worker, gpus_per_worker=spec.execution.gpus_per_worker)

    def _check_space(self, space) -> None:
        fingerprint = _space_fingerprint(space)
        recorded = self.store.meta("space")
        if self.store.meta("space_units") is None:  # which units each dimension moves (the sensitivity table)
            self.store.set_meta("space_units", {d.name: list(d.units) for d in space.dims})
        if recorded is None:
            self.store.set_meta("space", fingerprint)
        elif recorded != fingerprint:
            raise AutocompressError(
                f"{self.store.run_dir}: the search space built now differs from the one this run started with "
                "(the model, the search-space file or autocompress changed); its journal cannot be replayed. "
                "Start a new run with `autocompress search`")

    def _search(self) -> str:
        store, spec, say = self.store, self.spec, self.say
        proxy = spec.proxy.enabled
        # the driver's own copy of the model: the space comes from its structure (on the CPU when Ray evaluates)
        setup = Setup.open(spec, device="cpu" if self.workers else None, progress=True, say=say)
        for note in setup.session.data.notes:
            say(f"note: {note}")
        self._check_space(setup.space)
        _write_splits(store.run_dir, setup.session)
        executor = self.executor = self._executor(setup, proxy)
        plan = _validation_plan(store, spec, len(setup.session.evaluation_order()))
        shards = shard_bounds(plan["images"], plan["shard_images"])
        constraints = store.constraints()
        baseline = store.meta("baseline")
        # the baseline's per-image correctness: what early stopping and a decision with confidence compare with
        pairs = spec.evaluation.early_stopping != "off" or spec.constraints.accuracy.confidence is not None
        if constraints is None or (pairs and baseline is None):
            say(f"measuring the baseline accuracy ({plan['images']:,} validation images)")
            measured = executor.baseline()
            measured = measured if isinstance(measured, dict) else {"accuracy": float(measured)}
            _check_autocast(measured, spec)
            if "per_image" in measured:
                baseline = {**measured, "per_image": base64.b64encode(measured["per_image"]).decode("ascii")}
                store.set_meta("baseline", baseline)
            if measured.get("energy") is not None:
                store.set_meta("baseline_energy", measured["energy"])
            if constraints is None:
                constraints = Constraints.from_spec(spec.constraints, measured["accuracy"], setup.baseline_bytes,
                                                    (measured.get("energy") or {}).get("energy_mj"))
                store.set_meta("constraints", asdict(constraints))
        early = None
        if pairs and baseline is not None and shards:
            early = EarlyStopping(unpack(base64.b64decode(baseline["per_image"]), plan["images"]), shards,
                                  constraints.max_drop_points, spec.evaluation.confidence,
                                  mode=spec.evaluation.early_stopping if len(shards) > 1 else "off",
                                  decision_confidence=constraints.confidence)
        for warning in _too_few_images(constraints, plan["images"], len(setup.session.holdout_order())):
            say(f"warning: {warning}")
            store.event("warning", warning)
        self.gate, strategy = setup.plan(constraints, proxy=proxy)
        prior = store.prior_results()
        self.gated_before = {r.result.candidate_id for r in store.records(("gate",))}
        elapsed_before = sum((s["ended_at"] or s["updated_at"]) - s["started_at"] for s in store.sessions()[:-1])
        self.loop = SearchLoop(strategy, self.gate, constraints, proxy=proxy, max_full_evaluations=self.max_full,
                               max_probes=spec.budget.max_probes, probe_cost=spec.budget.probe_cost,
                               max_seconds=self.max_hours * 3600 if self.max_hours else None, prior=prior,
                               elapsed_before=elapsed_before, on_record=self.record, shards=shards,
                               early_stopping=early)
        say(f"{self.command}: {strategy.name} over {setup.space.describe()}; baseline "
            f"{constraints.baseline_accuracy:.2f} % top-1, {setup.baseline_bytes:,} bytes; budget {self.max_full} "
            f"full evaluations" + (f" (a probe counts {spec.budget.probe_cost:g})" if spec.budget.probe_cost else "")
            + f"; proxy {'on' if proxy else 'off'}; validation in {len(shards)} shard"
            f"{'s' if len(shards) != 1 else ''} of {plan['shard_images']} images, early stopping "
            f"{early.mode if early is not None else 'off'}"
            + ("" if constraints.confidence is None else
               f"; feasible when the drop is within {constraints.max_drop_points:g} points at "
               f"{constraints.confidence:.0%} confidence")
            + f"; {self.workers or 'no'} "
            f"worker{'s' if self.workers != 1 else ''}" + (f"; replaying {len(prior)} recorded candidates" if prior else ""))
        stopped_by = drive(self.loop, executor, on_completion=self.completed, on_idle=self.idle).stopped_by
        held = setup.session.holdout_order()
        if len(held):
            measure_holdout(self.store, executor, len(held), plan["shard_images"], self.say, on_idle=self.idle)
        return stopped_by

    def run(self) -> dict:
        store = self.store
        store.begin_session(self.command, workers=self.workers, executor="ray" if self.workers else "in-process",
                            max_full_evaluations=self.max_full)
        store.start_heartbeat()
        if self.on_progress is not None:  # the budget and the stored count, before the setup's minutes
            self.on_progress(self.progress())
        state, stopped_by = "failed", str(StopReason.ERROR)
        try:
            state, stopped_by = "done", self._search()
        except KeyboardInterrupt:
            state, stopped_by = "interrupted", StopReason.INTERRUPTED
            if self.loop is not None:
                self.loop.stats.stopped_by = StopReason.INTERRUPTED
            store.event("interrupted", "stopped by the user (SIGINT/SIGTERM); finished work is kept")
            raise
        except Exception as error:
            state, stopped_by = "failed", f"{StopReason.ERROR}: {error}"
            store.event("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            if self.executor is not None:
                self.executor.shutdown()
            if not store.intact():
                _store_lost(store)  # raises: nothing below may run on a store nobody can read
            progress = self.progress()
            progress.stopped_by = stopped_by
            store.end_session(state, stopped_by, progress.to_dict())
            document = pareto_document(store)
            write_pareto(store.run_dir / "pareto.json", document)
            if self.on_end is not None and document["baseline"] is not None:  # nothing to show before the baseline
                self.on_end(store.run_dir)
        stats = document["statistics"]
        unused = stats["stored_probes"] - stats["proxy_evaluations"] if self.spec.proxy.enabled else 0
        stored = f" ({stats['stored_probes']} stored; {unused} not asked for again after the resume)" if unused > 0 else ""
        self.say(f"search ended ({stats['stopped_by']}): {stats['full_evaluations']} full evaluations "
                 f"({stats['early_stopped']} stopped early, {stats['stopped_feasible']} of them as feasible, "
                 f"{stats['completed']} completed; {stats['validation_images']:,} validation images), "
                 f"{stats['proxy_evaluations']} proxy evaluations{stored}, {stats['gated_out']} gated out, "
                 f"{stats['failed']} failed, {stats['retries']} retried, {stats['wall_seconds']:.0f} s")
        if state == "done" and self.spec.finetune.auto and document["baseline"] is not None:
            from autocompress.engine.finetune import finetune_run

            finetune_run(store, confine=self.data_roots, say=self.say, progress=False)  # finetune.points
            document = pareto_document(store)
            write_pareto(store.run_dir / "pareto.json", document)
            if self.on_end is not None:
                self.on_end(store.run_dir)
        return document
