"""The ``autocompress`` command line.

Exit codes: 0 done, 2 bad input (spec, paths, checkpoint, data), 3 failed,
130 interrupted. Errors a user can cause print one clear message, never a traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from autocompress.version import __version__
from autocompress.errors import EXIT_FAILED, EXIT_INTERRUPTED, AutocompressError

log = logging.getLogger("autocompress")


def _say(message: str) -> None:
    click.echo(message, err=True)


_SET = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a spec field, e.g. --set data.root=/data/imagenet/val (VALUE read as YAML; repeatable).")
_LIMIT = click.option(
    "--limit", "limit_items", multiple=True, metavar="NAME=VALUE",
    help="Raise (or lower) a cap on what a spec may ask for, e.g. --limit model.T=128 (repeatable; "
         "`autocompress limits` lists them).")


def _load_spec(spec_file: Path, overrides: tuple[str, ...] = (), limit_items: tuple[str, ...] = (),
               data_roots: tuple[Path, ...] = ()):
    """A spec file read, validated and checked against the caps (and, with
    ``data_roots``, confined to those folders)."""
    from autocompress.limits import Limits, check_limits
    from autocompress.spec import load_spec

    limits = Limits.parse(limit_items)
    spec = load_spec(spec_file, overrides=overrides, confine=list(data_roots) if data_roots else None)
    check_limits(spec, limits, source=str(spec_file))
    return spec


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autocompress")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Constraint-driven compression search for Spiking Vision Transformers."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@_SET
@_LIMIT
def validate(spec_file: Path, overrides: tuple[str, ...], limit_items: tuple[str, ...]) -> None:
    """Check a constraint spec; print `ok`, or every error (exit 2)."""
    _load_spec(spec_file, overrides, limit_items)
    click.echo("ok")


@cli.command()
@_LIMIT
def limits(limit_items: tuple[str, ...]) -> None:
    """List the caps on what a spec may ask for, with the values in force."""
    from autocompress.limits import LIMITS, Limits, number

    values = Limits.parse(limit_items)
    for name, info in LIMITS.items():
        click.echo(f"{name:<28} {number(values[name]):>15}  {info.description}")


@cli.command()
@click.option("--indent", default=2, show_default=True, help="JSON indentation.")
def schema(indent: int) -> None:
    """Print the JSON Schema of a constraint spec."""
    from autocompress.spec import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=indent))


@cli.command("train-reference")
@click.argument("name_or_spec", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the reference models and whether they are trained.")
@click.option("--force", is_flag=True, help="Train again even when a cached model exists.")
def train_reference_cmd(name_or_spec: str | None, list_only: bool, force: bool) -> None:
    """Train a reference model (by NAME, or the one a SPEC names as reference:NAME).

    A reference whose weights ship with autocompress is used as shipped; --force trains it
    again from its recipe into the cache (to check the recipe), without replacing them."""
    from autocompress.recipes import REFERENCES
    from autocompress.reference import (available_reference, ensure_reference, reference_metadata, shipped_path,
                                        train_reference)
    from autocompress.spec import load_spec
    from autocompress.vocabulary import REFERENCE_PREFIX

    if list_only or name_or_spec is None:
        for name, recipe in sorted(REFERENCES.items()):
            path = available_reference(name)
            meta = reference_metadata(name)
            kind = "shipped" if path == shipped_path(name) else "trained"
            state = f"{kind}, {meta['test_accuracy']:.2f} % test accuracy" if meta else "not trained"
            click.echo(f"{name}: {recipe.description} [{state}] {path or 'not trained'}")
        return
    name, data_root = name_or_spec, None
    if name not in REFERENCES:
        if not Path(name).exists():
            raise click.BadParameter(f"'{name}' is neither a reference model ({', '.join(REFERENCES)}) nor a spec file")
        spec = load_spec(name)
        checkpoint, data_root = spec.model.checkpoint or "", spec.data.root
        if not checkpoint.startswith(REFERENCE_PREFIX):
            raise click.BadParameter(f"the spec {name} does not name a reference model (model.checkpoint: reference:NAME)")
        name = checkpoint[len(REFERENCE_PREFIX):]
    if force:
        train_reference(name, say=_say, data_root=data_root)
    else:
        path = ensure_reference(name, say=_say, data_root=data_root)
        meta = reference_metadata(name)
        click.echo(f"reference model '{name}': {meta['test_accuracy']:.2f} % test accuracy, checkpoint {path}")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--model", "model_file", type=click.Path(path_type=Path),
              help="Evaluate this exported model (from `autocompress export`) instead of the spec's model.")
@click.option("--split", type=click.Choice(["all", "selection", "holdout"]), default="all", show_default=True,
              help="Which validation images: all of them, the selection split a search decides on, or the "
                   "held-out split it reports (data.validation.holdout).")
@_SET
@_LIMIT
def evaluate(spec_file: Path, as_json: bool, model_file: Path | None, split: str, overrides: tuple[str, ...],
             limit_items: tuple[str, ...]) -> None:
    """Evaluate the spec's (uncompressed) model, or an exported one: top-1 accuracy
    on the spec's validation set (or one split of it), and footprint.

    A reference model named by the spec (reference:NAME) is trained first if it is
    not cached yet.
    """
    from autocompress.compress import footprint as model_footprint
    from autocompress.compress import load_compressed
    from autocompress.engine import Session

    from autocompress.errors import UserInputError

    spec = _load_spec(spec_file, overrides, limit_items)
    held = spec.data.validation.holdout
    if split != "all" and not held:
        raise UserInputError(f"--split {split}: {spec_file} holds no validation images out "
                             "(data.validation.holdout is 0), so every image is in one split: use --split all")
    session = Session.open(spec, progress=not as_json, say=_say)
    for note in session.data.notes:
        _say(f"note: {note}")
    model = None
    if model_file is not None:
        model = load_compressed(model_file).to(session.device)
    indices = {"all": None, "selection": session.evaluation_order(), "holdout": session.holdout_order()}[split]
    result = session.evaluate(model, indices=indices, progress=not as_json)
    footprint = session.footprint() if model is None else model_footprint(model)
    described = {
        "all": "all validation images" + (
            f" (a search decides on the selection split, {1 - held:.0%}, and reports the held-out one, {held:.0%}: "
            "each split's baseline differs from this figure because it is measured on other images; "
            "--split selection|holdout gives them)" if held else ""),
        "selection": f"the selection split ({1 - held:.0%}: what a search of this spec decides on and reports as "
                     "its baseline)",
        "holdout": f"the held-out split ({held:.0%}, seed {spec.data.validation.holdout_seed}: the images a search "
                   "of this spec never chooses on; pareto.json's holdout.baseline_accuracy)",
    }[split]
    if as_json:
        click.echo(json.dumps({
            "spec": spec.name, "model": spec.model.family, "checkpoint": session.checkpoint,
            "exported_model": str(model_file) if model_file else None,
            "device": str(session.device), "data": session.data.description, "split": split,
            "evaluation": result.to_dict(), "footprint_bytes": footprint,
        }, indent=2))
        return
    click.echo(f"spec:          {spec.name}")
    click.echo(f"model:         {spec.model.family} ({model_file or spec.model.checkpoint or 'no checkpoint'})")
    click.echo(f"checkpoint:    {session.checkpoint}")
    click.echo(f"data:          {session.data.description}")
    click.echo(f"split:         {described}")
    click.echo(f"device:        {session.device}")
    click.echo(f"test accuracy: {result.accuracy:.2f} % top-1 ({result.correct}/{result.total} images, {result.seconds:.1f} s)")
    if result.skipped:
        click.echo(f"skipped:       {len(result.skipped)} unreadable images (first: {result.skipped[0]})")
    click.echo(f"footprint:     {footprint} bytes ({footprint / 2**20:.3f} MiB, parameters and buffers at their stored dtype)")


def _progress_display(budget_hint: int):
    """A live display of a search's progress (a line every 10 s when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("full evaluations"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    )
    task = progress.add_task("search", total=budget_hint, status="starting")
    last_line = [time.monotonic()]

    def update(state) -> None:  # an autocompress.engine.Progress
        best = state.best
        shown = f"{best['memory_saving']:.1%} saved at {best['accuracy_drop']:+.2f}" if best else "none yet"
        status = (f"proxy {state.proxy_evaluations}, gated out {state.gated_out}, stopped early "
                  f"{state.early_stopped}, failed {state.failed}, retried {state.retries}, in flight "
                  f"{state.in_flight}, best feasible: {shown}")
        progress.update(task, completed=state.full_evaluations, total=state.max_full_evaluations, status=status)
        if not console.is_terminal and time.monotonic() - last_line[0] >= 10:
            last_line[0] = time.monotonic()
            _say(f"progress: {state.full_evaluations}/{state.max_full_evaluations} full evaluations, {status}, "
                 f"{state.wall_seconds:.0f} s")

    return progress, update


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops a search like Ctrl-C: in-flight work abandoned, finished work kept, exit 130."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _draw_report(run_dir: Path) -> None:
    """report.html and its PNGs, after the search (whichever way it ended); a report that
    cannot be drawn never fails the search."""
    from autocompress.report import build_report

    try:
        build_report(run_dir)
    except Exception as error:  # e.g. no baseline measured yet
        _say(f"note: no report ({type(error).__name__}: {error}); `autocompress report {run_dir}` retries")


def _interrupted(run_dir: Path) -> None:
    """After Ctrl-C (or SIGTERM): the Pareto set so far, where the run is and how to go on;
    then the interrupt goes on (exit 130)."""
    from autocompress.engine import RunStore, pareto_document

    try:
        with RunStore.open_reader(run_dir) as store:
            document = pareto_document(store)
    except Exception as error:  # nothing stored yet, or the store is not there
        _say(f"interrupted before any result was stored ({type(error).__name__}); run directory: {run_dir}")
        raise KeyboardInterrupt from None
    _print_pareto(document)
    _say(f"interrupted: every finished evaluation is kept in {run_dir}. `autocompress resume {run_dir}` goes on "
         f"with the search; `autocompress resume {run_dir} --finish` ends it now, with what it has (the Pareto "
         "points measured on the held-out split, pareto.json and the report)")
    raise KeyboardInterrupt


def _finish_search(document: dict) -> None:
    _print_pareto(document)
    click.echo(f"pareto.json: {Path(document['run_dir']) / 'pareto.json'}")
    if (Path(document["run_dir"]) / "report.html").is_file():
        click.echo(f"report:      {Path(document['run_dir']) / 'report.html'}")
    from autocompress.search import StopReason

    if StopReason.parse(document["statistics"]["stopped_by"]) is StopReason.ERROR:
        raise AutocompressError(f"the search failed: {document['statistics']['stopped_by']}")


_EXECUTION_OPTIONS = [
    click.option("--workers", type=click.IntRange(min=0), help="Evaluation workers (Ray actors); 0 evaluates in "
                 "this process. Overrides execution.workers."),
    click.option("--ray-address", help="Join this Ray cluster ('auto' or host:port) instead of starting a local "
                 "Ray. Overrides execution.ray_address."),
    click.option("--max-full-evaluations", type=click.IntRange(min=1), help="Override budget.max_full_evaluations."),
]


_DATA_ROOTS = click.option(
    "--data-roots", "data_roots", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Only accept spec paths inside these folders, symlinks resolved (the HTTP service runs its jobs so).")


def _execution_options(function):
    for option in reversed(_EXECUTION_OPTIONS):
        function = option(function)
    return function


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path), help="The run directory (default: output.run_dir, "
              "which defaults to runs/<name>-<date>-<time> beside the spec).")
@_execution_options
@_SET
@_LIMIT
@_DATA_ROOTS
def search(spec_file: Path, run_dir: Path | None, workers: int | None, ray_address: str | None,
           max_full_evaluations: int | None, overrides: tuple[str, ...], limit_items: tuple[str, ...],
           data_roots: tuple[Path, ...]) -> None:
    """Search the spec's space; print the Pareto set and write pareto.json into the run directory.

    Every result is stored in the run directory as it completes: `autocompress
    status RUN_DIR` shows progress from another shell, and `autocompress resume
    RUN_DIR` continues a search that was killed or ran out of budget.
    """
    from autocompress.engine import RunOptions, start_search

    _interrupt_on_sigterm()
    spec = _load_spec(spec_file, overrides, limit_items, data_roots)
    options = RunOptions(workers=workers, ray_address=ray_address, max_full_evaluations=max_full_evaluations,
                         data_roots=[str(p) for p in data_roots] or None)
    target = (run_dir or spec.output.run_dir).resolve()
    _say(f"run directory: {target}")
    display, update = _progress_display(max_full_evaluations or spec.budget.max_full_evaluations)
    try:
        with display:
            document = start_search(spec, run_dir=target, options=options, spec_file=str(spec_file.resolve()),
                                    say=_say, on_progress=update, on_end=_draw_report)
    except KeyboardInterrupt:
        _interrupted(target)
    _finish_search(document)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@_execution_options
@click.option("--max-hours", type=click.FloatRange(min=0, min_open=True), help="Override budget.max_hours.")
@click.option("--finish", is_flag=True, help="End the search now with what it has: no new full evaluation; the "
              "Pareto points are measured on the held-out split and pareto.json and the report are written.")
@_DATA_ROOTS
def resume(run_dir: Path, workers: int | None, ray_address: str | None, max_full_evaluations: int | None,
           max_hours: float | None, finish: bool, data_roots: tuple[Path, ...]) -> None:
    """Continue the search of RUN_DIR (killed, interrupted, or out of budget: raise it
    with --max-full-evaluations), or end it now (--finish). Recorded results are reused,
    never evaluated again."""
    from autocompress.engine import RunOptions, RunStore, resume_search

    _interrupt_on_sigterm()
    if finish:
        if max_full_evaluations is not None:
            raise click.UsageError("--finish ends the search at the full evaluations it has; drop "
                                   "--max-full-evaluations")
        with RunStore.open_reader(run_dir) as store:
            max_full_evaluations = max(1, store.counts()["full"])
    options = RunOptions(workers=workers, ray_address=ray_address, max_full_evaluations=max_full_evaluations,
                         max_hours=max_hours, data_roots=[str(p) for p in data_roots] or None)
    display, update = _progress_display(max_full_evaluations or 1)
    try:
        with display:
            document = resume_search(run_dir, options=options, say=_say, on_progress=update, on_end=_draw_report)
    except KeyboardInterrupt:
        _interrupted(run_dir)
    _finish_search(document)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(run_dir: Path, as_json: bool) -> None:
    """Show a run's state and progress (also while its search runs, from another shell)."""
    from autocompress.engine import Progress, run_status

    report = run_status(run_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    p = Progress.from_dict(report["progress"])
    click.echo(f"run:        {report['run_dir']} ({report['spec']}, {report['strategy']})")
    click.echo(f"state:      {report['state']}" + (f" ({report['stopped_by']})" if report.get("stopped_by") else ""))
    if report.get("hint"):
        click.echo(f"            {report['hint']}")
    click.echo(f"session:    {report['sessions']} (`{report['command']}`, pid {report['pid']} on {report['host']}, "
               f"{report['executor']}, {report['worker_count']} workers), last update {report['updated_ago']:.0f} s ago")
    click.echo(f"full:       {p.full_evaluations} of {p.max_full_evaluations or '?'} "
               f"(stored: {report['stored']['full']}); stopped early {p.early_stopped}; "
               f"{p.validation_images:,} validation images read")
    click.echo(f"proxy:      {p.proxy_evaluations}; gated out {p.gated_out}; failed {p.failed}; "
               f"retried {report['retries']}; in flight {p.in_flight}")
    click.echo(f"time:       {p.wall_seconds:.0f} s")
    best, held = report["best"], report.get("holdout")
    if best is None:
        nearest = (held or {}).get("nearest")
        click.echo("best:       " + ("none feasible yet" if nearest is None else
                   f"none of the chosen points stays within the limit on held-out images; nearest: {nearest['id']} "
                   f"(held-out drop {nearest['accuracy_drop']:+.2f})"
                   + ("" if not (held or {}).get("measured_only") else
                      f"; within it on the measured drop alone, not certified: {held['measured_only']['id']} "
                      f"({held['measured_only']['accuracy_drop']:+.2f})")))
    else:
        measured = best.get("holdout") if best.get("decided_on") == "holdout" else None
        click.echo("best:       " + f"{best['id']}: {best['memory_bytes']:,} bytes ({best['memory_saving']:.1%} saved), "
                   + ("" if measured is None else
                      f"held-out {measured['accuracy']:.2f} % top-1 ({measured['accuracy_drop']:+.2f} points"
                      + ("" if measured.get("drop_upper") is None else f", at most {measured['drop_upper']:+.2f}")
                      + f", {measured['images']:,} images); selection ")
                   + f"{best['accuracy']:.2f} % top-1 ({best['accuracy_drop']:+.2f} points)"
                   + ("" if best.get("energy_mj") is None else f", {format_energy(best['energy_mj'])} per image")
                   + ("" if best.get("latency_ms") is None else f", {best['latency_ms']:.2f} ms at batch 1")
                   + (" (held-out test not complete yet)" if held and best.get("decided_on") == "selection" else ""))
    for w in report["workers"]:
        click.echo(f"worker:     {w['name']} pid {w['pid']} on {w['node']}: {w['state']}"
                   + (f" ({w['task']})" if w["task"] else ""))
    for point, t in (report.get("finetune") or {}).items():
        line = f"finetune:   {point}: {t['state']}, epoch {t['epoch']}/{t['epochs']}"
        if t["loss"] is not None:
            line += f", loss {t['loss']:.4f}"
        if t["validation_accuracy"] is not None and t["state"] != "done":
            line += f", validation {t['validation_accuracy']:.2f} %"
        line += f"; top-1 {t['accuracy_before']:.2f} %"
        if t["accuracy"] is not None:
            line += f" -> {t['accuracy']:.2f} % ({'feasible' if t['feasible'] else 'not feasible'})"
        click.echo(line)
    for e in report["events"][-5:]:
        click.echo(f"event:      {e['kind']}: {e['message']}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print pareto.json's content.")
def pareto(run_dir: Path, as_json: bool) -> None:
    """Print a run's Pareto set (the set so far while the search runs)."""
    from autocompress.engine import RunStore, pareto_document

    with RunStore.open_reader(run_dir) as store:
        document = pareto_document(store)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        _print_pareto(document)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Write report.html (plots embedded) and the PNGs into RUN_DIR (also while it runs)."""
    from autocompress.engine import RunStore
    from autocompress.errors import UserInputError
    from autocompress.report import PLOTS, build_report

    RunStore.open_reader(run_dir).close()  # a clear error for a path that is not a run directory
    try:
        path = build_report(run_dir)
    except ValueError as error:
        raise UserInputError(str(error)) from None
    click.echo(f"report: {path}")
    names = list(PLOTS) + (["energy"] if (Path(run_dir) / "energy.png").is_file() else [])
    click.echo("plots:  " + ", ".join(str(Path(run_dir) / f"{name}.png") for name in names))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--point", "point_ids", multiple=True, help="A fully evaluated candidate's id (repeatable); "
              "default: the spec's finetune.points (best feasible point and near misses).")
@click.option("--epochs", type=click.IntRange(min=1), help="Override finetune.epochs.")
@click.option("--workers", type=click.IntRange(min=0), help="Ray Train workers (data-parallel); 0 trains in this "
              "process. Overrides finetune.workers.")
@click.option("--ray-address", help="Join this Ray cluster instead of starting a local Ray.")
@click.option("--restart", is_flag=True, help="Discard the point's checkpoint and earlier result; train from the start.")
@click.option("--set", "overrides", multiple=True, metavar="finetune.KEY=VALUE",
              help="Override a finetune setting of the run's spec, e.g. --set finetune.lr=1e-3 (repeatable).")
@_LIMIT
@_DATA_ROOTS
def finetune(run_dir: Path, point_ids: tuple[str, ...], epochs: int | None, workers: int | None,
             ray_address: str | None, restart: bool, overrides: tuple[str, ...], limit_items: tuple[str, ...],
             data_roots: tuple[Path, ...]) -> None:
    """Recovery fine-tuning of compressed candidates of RUN_DIR: quantization-aware
    training with distillation from the uncompressed model, the candidate's structure
    and bit-widths kept. Prints each point's accuracy before and after; `export
    --tuned` writes the tuned model. A killed fine-tuning resumes from its last epoch
    when run again."""
    from autocompress.engine.finetune import finetune as run_finetune, held_out_text
    from autocompress.limits import Limits, check_limits

    _interrupt_on_sigterm()
    limits = Limits.parse(limit_items)
    overrides = tuple(overrides) + ((f"finetune.epochs={epochs}",) if epochs else ())
    entries = run_finetune(run_dir, list(point_ids) or None, overrides=list(overrides), workers=workers,
                           address=ray_address, restart=restart, say=_say,
                           confine=[str(p) for p in data_roots] or None,
                           check=lambda spec: check_limits(spec, limits, source=f"{run_dir} (finetune settings)"))
    for entry in entries:
        point = entry["id"]
        held = held_out_text(entry)
        click.echo(f"{point}: {entry['memory_bytes']:,} bytes, top-1 {entry['accuracy_before']:.2f} % -> "
                   f"{entry['accuracy']:.2f} % (drop {entry['accuracy_drop_before']:+.2f} -> "
                   f"{entry['accuracy_drop']:+.2f}), feasible {'yes' if entry['feasible_before'] else 'no'} -> "
                   f"{'yes' if entry['feasible'] else 'no'}{held}")
    if entries:
        click.echo(f"pareto.json: {Path(run_dir) / 'pareto.json'} (\"tuned\" block); export a tuned point with "
                   f"`autocompress export {run_dir} --point ID --tuned --out FILE`")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--point", "point_id", required=True, help="The candidate id (a Pareto point's `id`).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path), help="The file to write.")
@click.option("--tuned", is_flag=True, help="The point's fine-tuned model (`autocompress finetune`) instead of "
              "the search's.")
def export(run_dir: Path, point_id: str, out_file: Path, tuned: bool) -> None:
    """Write the packed compressed model of a fully evaluated candidate (safetensors).

    Load it with `autocompress.load(FILE)` (weights only, no pickle), or evaluate it
    with `autocompress evaluate SPEC --model FILE`.
    """
    from autocompress.engine import export_point

    info = export_point(run_dir, point_id, out_file, say=_say, tuned=tuned)
    if info.get("tuned"):
        click.echo(f"wrote {info['path']}: {info['file_bytes']:,} bytes (footprint {info['memory_bytes']:,}); "
                   f"fine-tuned accuracy {info['accuracy']:.2f} % top-1 (untuned {info['accuracy_before']:.2f} %)")
        return
    if info["early_stopped"]:
        accuracy = (f"validation stopped early as certainly infeasible: about {info['accuracy']:.2f} % top-1, "
                    f"estimated on {info['images']:,} images")
    else:
        accuracy = f"recorded accuracy {info['accuracy']:.2f} % top-1"
        held = info.get("holdout")
        if held is not None:  # the figure on images the search did not choose on comes first
            verdict = "within" if held["feasible"] else "NOT within"
            accuracy = (f"held-out accuracy {held['accuracy']:.2f} % top-1 (drop {held['accuracy_drop']:+.2f}"
                        + ("" if held.get("drop_upper") is None else f", at most {held['drop_upper']:+.2f}")
                        + f" on {held['images']:,} held-out images: {verdict} the {info['limit']:g}-point limit); "
                        f"selection {info['accuracy']:.2f} %")
    click.echo(f"wrote {info['path']}: {info['file_bytes']:,} bytes (footprint {info['memory_bytes']:,}); "
               + accuracy + ("" if info["pareto"] else " (not on the Pareto front)")
               + (" (the recommended point)" if info.get("recommended") else ""))


def format_energy(mj: float | None) -> str:
    """Millijoules in the unit that reads best (mJ, uJ, nJ)."""
    if mj is None:
        return "-"
    from autocompress.vocabulary import energy_unit

    unit, scale = energy_unit(mj)
    return f"{mj / scale:.3g} {unit}"


def _print_pareto(document: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    baseline = document["baseline"]
    stats = document["statistics"]
    if baseline is None:
        click.echo(f"{document['run_dir']}: no results yet (state: {document['state']})")
        return
    table = Table(title=f"Pareto set ({len(document['points'])} points; baseline {baseline['accuracy']:.2f} % top-1, "
                        f"{baseline['memory_bytes']:,} bytes)")
    held = document.get("holdout")
    # with a held-out split its figures come first: they decide the recommended point
    columns = (["id", "held-out %", "held-out drop", "at most", "top-1 % (selection)", "drop (selection)"] if held
               else ["id", "top-1 %", "drop"]) + ["bytes", "saved", "feasible", "drift"]
    energy = baseline.get("energy_mj") is not None
    if energy:
        columns += ["energy/image", "energy saved"]
    latency = baseline.get("latency_ms") is not None
    if latency:
        columns += ["ms (batch 1)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "id" else "right")
    for p in document["points"]:
        marker = " *" if p["id"] == document["best"] else ""
        row = [p["id"] + marker]
        if held:
            measured = p.get("holdout")
            row += ["-", "-", "-"] if measured is None else [
                f"{measured['accuracy']:.2f}", f"{measured['accuracy_drop']:+.2f}",
                "-" if measured.get("drop_upper") is None else f"{measured['drop_upper']:+.2f}"]
        feasible = "yes" if p["feasible"] else "no"
        if held and p.get("holdout") is not None and p["feasible"]:
            feasible = "yes" if p["holdout"]["feasible"] else "selection only"
        row += [f"{p['accuracy']:.2f}", f"{p['accuracy_drop']:+.2f}", f"{p['memory_bytes']:,}",
                f"{p['memory_saving']:.1%}", feasible, "-" if p["proxy"] is None else f"{p['proxy']:.4f}"]
        if energy:
            row += [format_energy(p.get("energy_mj")),
                    "-" if p.get("energy_saving") is None else f"{p['energy_saving']:.1%}"]
        if latency:
            row += ["-" if p.get("latency_ms") is None else f"{p['latency_ms']:.2f}"]
        table.add_row(*row)
    Console(width=(160 if held else 120) + (30 if energy else 0)).print(table)
    if energy:
        click.echo(f"energy: estimate per image from the spikes and operations counted on the calibration batch "
                   f"(baseline {format_energy(baseline['energy_mj'])}, {baseline['synops']:,.0f} synaptic "
                   f"operations, firing rate {baseline['firing_rate']:.3f})"
                   + ("" if document["constraints"].get("max_energy_mj") is None else
                      f"; limit {format_energy(document['constraints']['max_energy_mj'])}"))
    if latency:
        click.echo(f"latency: median of a forward pass at batch 1 on the worker's device (baseline "
                   f"{baseline['latency_ms']:.2f} ms)" + ("" if document["constraints"].get("max_latency_ms") is None
                                                         else f"; limit {document['constraints']['max_latency_ms']:g} ms"))
    if held:
        base = held["baseline_accuracy"]
        confidence = held.get("confidence")
        click.echo(f"held out of the search: {held['images']:,} images ({held['fraction']:.0%} of the validation "
                   f"set); baseline there {'not measured yet' if base is None else f'{base:.2f} % top-1'}. "
                   "The held-out columns are measured on images the search never chose on"
                   + ("" if confidence is None else f" ('at most': the drop's upper bound at {confidence:.0%} "
                      "confidence)")
                   + "; the selection columns are what the search decided on, optimistic for the points it kept")
    click.echo(f"{stats['strategy']} (seed {stats['seed']}, {stats['granularity']} granularity, "
               f"{stats['workers']} workers): {stats['full_evaluations']} full evaluations, "
               f"{stats['proxy_evaluations']} proxy evaluations, {stats['gated_out']} gated out, "
               f"{stats.get('early_stopped', 0)} stopped early ({stats.get('validation_images', 0):,} validation images "
               f"read), {stats['failed']} failed, {stats['retries']} retried after a worker died, "
               f"{stats['wall_seconds']:.0f} s; "
               f"stopped by {stats['stopped_by']} (state: {document['state']})")
    stopped = document.get("early_stopped") or []
    if stopped:
        click.echo("stopped early (certainly infeasible, accuracy estimated, never a point): "
                   + ", ".join(f"{p['id']} after {p['images']:,} images (drop >= {p['accuracy_drop_at_least']:.2f})"
                               for p in stopped[:5]) + (f" and {len(stopped) - 5} more" if len(stopped) > 5 else ""))
    from autocompress.engine.pareto_file import recommendation_line

    confidence = (document.get("constraints") or {}).get("accuracy", {}).get("confidence")
    if not held and document["points"]:
        click.echo("no held-out split: every figure is measured on the images the search chose on, optimistic for "
                   "the points it kept" + ("" if confidence is None else
                                           f" (feasible: the drop's upper bound at {confidence:.0%} confidence within "
                                           "the limit)")
                   + "; data.validation.holdout keeps images out for a figure on fresh ones")
    click.echo(recommendation_line(document))



@cli.command("inspect-checkpoint")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--ema", is_flag=True, help="Describe the EMA weights (state_dict_ema) instead of the model weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def inspect_checkpoint(checkpoint: Path, ema: bool, as_json: bool) -> None:
    """Say which family, variant and spec `model` section fit a checkpoint file.

    The file is read with weights only; an official Spikformer or Spike-driven
    Transformer layout is converted and loaded into the family's network to check that
    it fits. Model arguments that the weights do not determine (time steps, heads,
    image size) come from the training arguments saved beside them, or are the
    published defaults, and are marked so.
    """
    import yaml

    from autocompress.models import inspect_checkpoint

    found = inspect_checkpoint(checkpoint, ema=ema)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"checkpoint:  {found['path']}")
    click.echo(f"file:        {found['file']}")
    click.echo(f"layout:      {found['layout_description']}")
    click.echo(f"model:       {found['variant']}, {found['parameters']:,} parameters and buffers")
    if found["model"] is None:
        determined = ", ".join(f"{key} {value}" for key, value in found["determined"].items())
        click.echo(f"the tensors determine: {determined}")
        click.echo(f"not determined (write them in the spec's model section): {', '.join(found['undetermined'])}")
        for note in found["notes"]:
            click.echo(f"note:        {note}")
        click.echo(f"no spec section is proposed: give model.family (one of {', '.join(found['candidate_families'])}) "
                   "and the arguments the model was built with")
        return
    if found["conversion"]:
        click.echo(f"conversion:  {found['conversion']}")
    if found["from_training_args"]:
        click.echo(f"from the saved training arguments: {', '.join(found['from_training_args'])}")
    if found["assumed"]:
        click.echo(f"not recorded in the file (published defaults, check them): {', '.join(found['assumed'])}")
    for note in found["notes"]:
        click.echo(f"note:        {note}")
    click.echo("spec sections that fit it:")
    sections = {"model": found["model"], "data": {"transform": {"preset": found["transform_preset"]}}}
    click.echo(yaml.safe_dump(sections, sort_keys=False, default_flow_style=None, width=100).rstrip())


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@_SET
@_LIMIT
def groups(spec_file: Path, as_json: bool, overrides: tuple[str, ...], limit_items: tuple[str, ...]) -> None:
    """List the model's prunable channel groups and quantizable layers.

    For custom models the groups come from tracing and each one is verified
    (pruning it must equal zeroing it); the ones left out are listed with the reason.
    """
    from autocompress.compress import quantizable_layers
    from autocompress.engine import Session, channel_groups

    session = Session.open(_load_spec(spec_file, overrides, limit_items), say=_say)
    report = channel_groups(session)
    layers = quantizable_layers(session.model.net)
    if as_json:
        click.echo(json.dumps({
            "groups": [{"name": g.name, "kind": g.kind, "channels": g.channels, "heads": g.heads, "params": g.params}
                       for g in report.groups],
            "left_out": [{"name": name, "reason": reason} for name, reason in report.rejected],
            "layers": layers,
        }, indent=2))
        return
    click.echo(f"{len(report.groups)} channel groups (pruning units):")
    for g in report.groups:
        heads = f", {g.heads} heads" if g.heads > 1 else ""
        click.echo(f"  {g.name:<40} {g.kind:<15} {g.channels:>6} channels{heads}, {g.params:,} parameters")
    if report.rejected:
        click.echo(f"{len(report.rejected)} groups left out (not prunable as traced, or failed verification):")
        for name, reason in report.rejected:
            click.echo(f"  {name}: {reason}")
    click.echo(f"{len(layers)} quantizable layers, {sum(layers.values()):,} weights")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where each submitted search gets its run directory.")
@click.option("--data-roots", "data_roots", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folders that submitted specs may read (checkpoints, data, space files); repeat for several. "
                   "Relative paths in specs are read from the first.")
@click.option("--ray-address", help="Run searches as Ray Jobs on this cluster (its dashboard address, e.g. "
                                    "http://head:8265) instead of local processes.")
@click.option("--max-concurrent", default=1, show_default=True, type=click.IntRange(min=1),
              help="Searches running at once; the rest wait in the queue.")
@click.option("--max-workers", type=click.IntRange(min=0), help="Most execution.workers a spec may ask for "
              "(default: this machine's CPU count; the same as --limit execution.workers=N).")
@click.option("--token", envvar="AUTOCOMPRESS_TOKEN", help="Bearer token clients must send (or set "
              "AUTOCOMPRESS_TOKEN). Required off loopback, at least 32 random characters; on loopback one is "
              "generated when not given.")
@click.option("--max-body-bytes", default=256 * 1024, show_default=True, type=click.IntRange(min=1024, max=16 << 20))
@click.option("--allow-factory", "allow_factories", multiple=True, metavar="MODULE:FUNCTION",
              help="A custom-model factory that specs may name (it is code, run by the jobs); repeat for several.")
@_LIMIT
def serve(host: str, port: int, runs_dir: Path, data_roots: tuple[Path, ...], ray_address: str | None,
          max_concurrent: int, max_workers: int | None, token: str | None, max_body_bytes: int,
          allow_factories: tuple[str, ...], limit_items: tuple[str, ...]) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json): submit specs, follow searches, fetch results."""
    import os
    import re
    import secrets

    import uvicorn

    from autocompress.errors import UserInputError
    from autocompress.limits import Limits
    from autocompress.service import ServiceConfig, create_app
    from autocompress.service import check_token, write_token_file

    check_token(token, host)
    for factory in allow_factories:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", factory):
            raise UserInputError(f"--allow-factory {factory!r}: name one factory as module:function "
                                 "(e.g. mymodels.qkformer:build)")
    limits = Limits.parse(limit_items)
    if max_workers is not None:
        limits.values["execution.workers"] = max_workers
    elif "execution.workers" not in limits.overrides():  # by default no more workers than this machine has CPUs
        limits.values["execution.workers"] = min(limits["execution.workers"], os.cpu_count() or 1)
    runs_dir = runs_dir.resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not token:
        token = secrets.token_urlsafe(24)
        token_file = runs_dir / "service-token"
        write_token_file(token_file, token)
        _say(f"no --token given: generated one, written to {token_file} (mode 600; send it as "
             "'Authorization: Bearer ...')")
    config = ServiceConfig(runs_dir=runs_dir, token=token, data_roots=[p.resolve() for p in data_roots],
                           ray_address=ray_address, max_concurrent=max_concurrent, max_body_bytes=max_body_bytes,
                           allow_factories=list(allow_factories), limits=limits)
    app = create_app(config)
    app.state.jobs.claim()  # one service per runs folder: refuse now, before listening
    _say(f"serving on http://{host}:{port} (runs in {runs_dir}; data roots: "
         f"{', '.join(map(str, config.data_roots)) or 'none'}; jobs: {'Ray at ' + ray_address if ray_address else 'local'}"
         f", at most {max_concurrent} at once)")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _record_error(error: BaseException, code: int) -> int:
    """Tell a supervising service what kind of error ended the command (its own log has
    the message); AUTOCOMPRESS_ERROR_FILE names the file."""
    import os

    target = os.environ.get("AUTOCOMPRESS_ERROR_FILE")
    if target:
        try:
            Path(target).write_text(json.dumps({"kind": type(error).__name__, "exit_code": code}))
        except OSError:
            pass
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into messages and exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return _main(argv, debug)
    except BaseException as error:  # only --debug lets one through
        _record_error(error, EXIT_FAILED)
        raise


def _main(argv: list[str] | None, debug: bool) -> int:
    try:
        cli.main(args=argv, prog_name="autocompress", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as error:
        error.show()
        return _record_error(error, error.exit_code)
    except AutocompressError as error:
        if debug:
            raise
        _say(f"error: {error}")
        return _record_error(error, error.exit_code)
    except Exception as error:  # a bug or an environment failure: say so, exit 3
        if debug:
            raise
        _say(f"error: unexpected {type(error).__name__}: {error} (run with --debug for the traceback)")
        return _record_error(error, EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
