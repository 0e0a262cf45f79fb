"""The driver: one process per search that owns the strategy, the gate and the run
store, and hands tasks to an executor (in this process, or Ray actors).

``start_search`` creates a run directory and searches; ``resume_search`` continues a
run directory's search after a kill, an interrupt or a raised budget. Both rebuild
the strategy by replaying the run's journal through the search loop: recorded results
are reused (nothing is evaluated twice), tasks that were in flight are asked for again.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import yaml

from autocompress.compress import find_channel_groups, footprint, quantizable_layers
from autocompress.engine.executors import Completion, InProcessExecutor, RayExecutor
from autocompress.engine.pareto_file import best_summary, pareto_document, write_pareto
from autocompress.engine.session import Session
from autocompress.engine.space import build_space
from autocompress.engine.store import RunStore, StoreError
from autocompress.engine.worker import Worker, spec_from_frozen
from autocompress.errors import AutocompressError, UserInputError
from autocompress.proxy import Gate
from autocompress.search import Constraints, SearchLoop, create_strategy

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


def frozen_spec(spec) -> dict:
    """The spec as the run directory keeps it: plain JSON, every path absolute."""
    return spec.model_dump(mode="json")


def start_search(spec, *, run_dir: str | Path | None = None, options: RunOptions | None = None,
                 spec_file: str | None = None, say: Say = print,
                 on_progress: Callable[[dict], None] | None = None) -> dict:
    """Create the run directory and search; return the pareto.json document."""
    run_dir = Path(run_dir or spec.output.run_dir).resolve()
    data = frozen_spec(spec)
    data["output"]["run_dir"] = str(run_dir)
    spec_dir = str(Path(spec_file).resolve().parent) if spec_file else None
    spec_from_frozen(data, spec_dir, check_paths=False)  # the frozen form must read back (it always should)
    options = options or RunOptions()
    _check_local_workers(spec.execution.workers if options.workers is None else options.workers,
                         options.ray_address or spec.execution.ray_address)
    store = RunStore.create(run_dir, {"spec": data, "spec_file": spec_file, "spec_dir": spec_dir})
    try:
        (run_dir / "spec.yaml").write_text(
            "# the spec this run was started with (frozen; `autocompress resume` reads it)\n"
            + yaml.safe_dump(data, sort_keys=False))
        return _drive(store, spec, "search", options, say, on_progress)
    finally:
        store.close()


def resume_search(run_dir: str | Path, *, options: RunOptions | None = None, say: Say = print,
                  on_progress: Callable[[dict], None] | None = None) -> dict:
    """Continue the search of an existing run directory."""
    store = RunStore.open_writer(Path(run_dir).resolve())
    try:
        options = options or RunOptions()
        spec = spec_from_frozen(store.meta("spec"), store.meta("spec_dir"), confine=options.data_roots)
        return _drive(store, spec, "resume", options, say, on_progress)
    finally:
        store.close()


def _check_local_workers(workers: int, address: str | None) -> None:
    """A local Ray gets this machine's CPUs: refuse more workers before a run directory
    is made (the executor checks a cluster's CPUs and GPUs when it joins)."""
    cpus = os.cpu_count() or 1
    if workers > cpus and not address and not os.environ.get("RAY_ADDRESS"):
        raise UserInputError(f"execution.workers: {workers} workers need {workers} CPUs, but this machine has "
                             f"{cpus}; lower --workers (or execution.workers), or join a cluster with --ray-address")


def _budget(store: RunStore, spec, options: RunOptions) -> tuple[int, float | None]:
    """The run's budget: the spec's, unless a session raised (or lowered) it; kept in the store."""
    saved = store.meta("budget") or {}
    max_full = options.max_full_evaluations or saved.get("max_full_evaluations") or spec.budget.max_full_evaluations
    max_hours = options.max_hours or saved.get("max_hours") or spec.budget.max_hours
    store.set_meta("budget", {"max_full_evaluations": max_full, "max_hours": max_hours})
    return max_full, max_hours


def pump(loop: SearchLoop, executor, completed: Callable[[Completion], None] | None = None,
         idle: Callable[[], None] | None = None) -> None:
    """Run a search loop on an executor until it finishes: start as many tasks as there
    are free workers, hand back each completion (``completed`` does it, when given)."""
    while True:
        for task in loop.tasks(executor.free()):
            executor.submit(task)
        if loop.finished:
            break
        if loop.in_flight == 0:  # nothing to wait for and nothing asked: end rather than spin
            loop.stop("strategy asked nothing")
            continue
        for done in executor.wait(timeout=1.0):
            if completed is None:
                loop.complete(done.task, done.outcome)
            else:
                completed(done)
        if idle is not None:
            idle()
    loop.stats.stopped_by = loop.ended or "strategy finished"


def _report(run_dir: Path, say: Say) -> None:
    """report.html and its PNGs; a report that cannot be drawn never fails the search."""
    if not (run_dir / "pareto.json").is_file():
        return
    try:
        from autocompress.report import build_report

        build_report(run_dir)
    except Exception as error:  # e.g. no baseline measured yet
        say(f"note: no report ({type(error).__name__}: {error}); `autocompress report {run_dir}` retries")


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
    saved = store.meta("execution") or {}
    workers = options.workers if options.workers is not None else saved.get("workers", spec.execution.workers)
    address = options.ray_address if options.ray_address is not None else saved.get(
        "ray_address", spec.execution.ray_address)
    store.set_meta("execution", {"workers": workers, "ray_address": address})
    return workers, address


def _space_fingerprint(space) -> dict:
    return {"granularity": space.granularity,
            "dimensions": [[d.name, d.kind, list(d.choices)] for d in space.dims]}


def _drive(store: RunStore, spec, command: str, options: RunOptions, say: Say,
           on_progress: Callable[[dict], None] | None) -> dict:
    workers, address = _execution(store, spec, options)
    _check_local_workers(workers, address)
    if address and workers == 0:
        raise UserInputError("execution.ray_address is set but execution.workers is 0; "
                             "give the number of Ray workers (--workers N)")
    use_ray = workers > 0
    max_full, max_hours = _budget(store, spec, options)
    proxy = spec.proxy.enabled
    run_dir = store.run_dir

    store.begin_session(command, workers=workers, executor="ray" if use_ray else "in-process",
                        max_full_evaluations=max_full)
    store.start_heartbeat()
    executor = None
    loop: SearchLoop | None = None
    state, stopped_by = "failed", "error"
    current: list[Completion | None] = [None]

    def progress() -> dict:
        if loop is None:
            return {"max_full_evaluations": max_full}
        stats = loop.stats
        return {
            "full_evaluations": stats.full_evaluations, "proxy_evaluations": stats.probes,
            "gated_out": stats.gated_out, "failed": stats.failed, "cached": stats.cached,
            "replayed": stats.replayed, "retries": len(store.events("retry")),
            "workers_replaced": len(store.events("worker-replaced")),
            "wall_seconds": loop.elapsed(), "stopped_by": stats.stopped_by or loop.ended or "",
            "in_flight": loop.in_flight, "max_full_evaluations": max_full,
            "best": best_summary(loop.results.values()),
        }

    try:
        # the driver's own copy of the model: the space comes from its structure (on the CPU when Ray evaluates)
        session = Session.open(spec, device="cpu" if use_ray else None, progress=True, say=say)
        for note in session.data.notes:
            say(f"note: {note}")
        groups = find_channel_groups(session.model, example=session.data.calibration[:8].to(session.device))
        space = build_space(spec, groups, quantizable_layers(session.model.net))
        fingerprint = _space_fingerprint(space)
        recorded = store.meta("space")
        if recorded is None:
            store.set_meta("space", fingerprint)
        elif recorded != fingerprint:
            raise AutocompressError(
                f"{run_dir}: the search space built now differs from the one this run started with "
                "(the model, the search-space file or autocompress changed); its journal cannot be replayed. "
                "Start a new run with `autocompress search`")
        baseline_bytes = footprint(session.model)

        if use_ray:
            say(f"starting {workers} Ray worker{'s' if workers > 1 else ''} "
                f"({'cluster at ' + address if address else 'local Ray'})")
            executor = RayExecutor(
                frozen_spec(spec), store.meta("spec_dir"), workers=workers, device=spec.execution.device, address=address, proxy=proxy,
                run_dir=str(run_dir), max_retries=options.max_retries, on_event=store.event, on_worker=store.worker)
        else:
            executor = InProcessExecutor(Worker(session=session, groups=groups, proxy=proxy, run_dir=str(run_dir)),
                                         on_worker=store.worker)
        baseline = store.meta("constraints")
        if baseline is None:
            say("measuring the baseline accuracy")
            constraints = Constraints.from_spec(spec.constraints, executor.baseline(), baseline_bytes)
            store.set_meta("constraints", asdict(constraints))
        else:
            constraints = Constraints(**baseline)
        gate = Gate(spec.proxy.threshold, constraints.max_drop_points, enabled=proxy)
        strategy = create_strategy(spec.strategy, space, constraints, proxy=proxy)
        prior = store.prior_results()
        gated_before = {r.result.candidate_id for r in store.records(("gate",))}
        elapsed_before = sum((s["ended_at"] or s["updated_at"]) - s["started_at"] for s in store.sessions()[:-1])

        def record(kind, candidate, result) -> None:
            if kind == "gate" and result.candidate_id in gated_before:
                return  # decided again while replaying: recorded once
            done = current[0]
            store.record(kind, candidate.to_dict(), result, gate_threshold=gate.current_threshold(),
                         worker=done.worker if done else None, attempts=done.attempts if done else 1)

        loop = SearchLoop(strategy, None, gate, constraints, proxy=proxy, max_full_evaluations=max_full,
                          max_seconds=max_hours * 3600 if max_hours else None, prior=prior,
                          elapsed_before=elapsed_before, on_record=record)
        say(f"{command}: {strategy.name} over {space.describe()}; baseline {constraints.baseline_accuracy:.2f} % "
            f"top-1, {baseline_bytes:,} bytes; budget {max_full} full evaluations; proxy {'on' if proxy else 'off'}; "
            f"{workers or 'no'} worker{'s' if workers != 1 else ''}"
            + (f"; replaying {len(prior)} recorded candidates" if prior else ""))
        last_beat = [0.0]

        def completed(done: Completion) -> None:
            current[0] = done
            loop.complete(done.task, done.outcome)
            current[0] = None
            if on_progress is not None:
                on_progress(progress())

        def idle() -> None:
            if time.monotonic() - last_beat[0] >= 1.0:
                store.heartbeat(progress())
                last_beat[0] = time.monotonic()

        pump(loop, executor, completed, idle)
        state, stopped_by = "done", loop.stats.stopped_by
    except KeyboardInterrupt:
        state, stopped_by = "interrupted", "interrupted"
        if loop is not None:
            loop.stats.stopped_by = "interrupted"
        store.event("interrupted", "stopped by the user (SIGINT/SIGTERM); finished work is kept")
        raise
    except Exception as error:
        state, stopped_by = "failed", f"error: {error}"
        store.event("failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        if executor is not None:
            executor.shutdown()
        if not store.intact():
            _store_lost(store)  # raises: nothing below may run on a store nobody can read
        store.end_session(state, stopped_by, {**progress(), "stopped_by": stopped_by})
        document = pareto_document(store)
        write_pareto(run_dir / "pareto.json", document)
        if document["baseline"] is not None:  # nothing to draw before the baseline is measured
            _report(run_dir, say)
    stats = document["statistics"]
    say(f"search ended ({stats['stopped_by']}): {stats['full_evaluations']} full evaluations, "
        f"{stats['proxy_evaluations']} proxy evaluations, {stats['gated_out']} gated out, {stats['failed']} failed, "
        f"{stats['retries']} retried, {stats['wall_seconds']:.0f} s")
    return document
