"""The commands on a search and its run directory: search, resume, status, pareto, report,
finetune, export."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from autocompress.cli.common import DATA_ROOTS, JSON, LIMIT, QUIET, SET, cli, execution_options, say
from autocompress.cli.render import format_energy, print_pareto, progress_display
from autocompress.errors import AutocompressError, NoFeasiblePoint


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops a search like Ctrl-C: in-flight work abandoned, finished work kept, exit 130."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _interrupted(run_dir: Path) -> None:
    """After Ctrl-C (or SIGTERM): the Pareto set so far, where the run is and how to go on;
    then the interrupt goes on (exit 130)."""
    from autocompress.engine import RunStore, pareto_document

    try:
        with RunStore.open_reader(run_dir) as store:
            document = pareto_document(store)
    except Exception as error:  # nothing stored yet, or the store is not there
        say(f"interrupted before any result was stored ({type(error).__name__}); run directory: {run_dir}")
        raise KeyboardInterrupt from None
    print_pareto(document)
    say(f"interrupted: every finished evaluation is kept in {run_dir}. `autocompress resume {run_dir}` goes on "
        f"with the search; `autocompress resume {run_dir} --finish` ends it now, with what it has (the Pareto "
        "points measured on the held-out split, pareto.json and the report)")
    raise KeyboardInterrupt


FAIL_IF_INFEASIBLE = click.option(
    "--fail-if-infeasible", is_flag=True,
    help="Exit 4 when the search ends without a feasible point (for scripts; the run is kept as ever).")


def _finish_search(run_dir: Path, fail_if_infeasible: bool = False, as_json: bool = False) -> None:
    from autocompress.api import open_run
    from autocompress.searching import StopReason

    document = open_run(run_dir).document()
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        print_pareto(document)
        click.echo(f"pareto.json: {Path(document['run_dir']) / 'pareto.json'}")
        if (Path(document["run_dir"]) / "report.html").is_file():
            click.echo(f"report:      {Path(document['run_dir']) / 'report.html'}")
    if StopReason.parse(document["statistics"]["stopped_by"]) is StopReason.ERROR:
        raise AutocompressError(f"the search failed: {document['statistics']['stopped_by']}")
    if fail_if_infeasible and document.get("best") is None:
        raise NoFeasiblePoint(f"no feasible point ({document['statistics']['full_evaluations']} full evaluations); "
                              f"the near misses are in {Path(document['run_dir']) / 'pareto.json'}")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path), help="The run directory (default: output.run_dir, "
              "which defaults to runs/<name>-<date>-<time> beside the spec).")
@execution_options
@SET
@LIMIT
@DATA_ROOTS
@FAIL_IF_INFEASIBLE
@JSON
def search(spec_file: Path, run_dir: Path | None, workers: int | None, ray_address: str | None,
           max_full_evaluations: int | None, overrides: tuple[str, ...], limit_items: tuple[str, ...],
           data_roots: tuple[Path, ...], fail_if_infeasible: bool, as_json: bool) -> None:
    """Search the spec's space; print the Pareto set and write pareto.json into the run directory.

    Every result is stored in the run directory as it completes: `autocompress
    status RUN_DIR` shows progress from another shell, and `autocompress resume
    RUN_DIR` continues a search that was killed or ran out of budget. With --json the
    pareto.json document is printed instead of the table.
    """
    from autocompress.api import search as run_search
    from autocompress.errors import SearchInterrupted
    from autocompress.limits import Limits

    _interrupt_on_sigterm()
    display, update = progress_display(max_full_evaluations or 1)
    try:
        with display:
            run = run_search(spec_file, run_dir=run_dir, workers=workers, ray_address=ray_address,
                             max_full_evaluations=max_full_evaluations, overrides=overrides,
                             limits=Limits.parse(limit_items), data_roots=[str(p) for p in data_roots] or None,
                             on_progress=update, say=say)
    except SearchInterrupted as interrupted:
        _interrupted(Path(interrupted.run_dir))
    _finish_search(run.run_dir, fail_if_infeasible, as_json)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@execution_options
@click.option("--max-hours", type=click.FloatRange(min=0, min_open=True), help="Override budget.max_hours.")
@click.option("--finish", is_flag=True, help="End the search now with what it has: no new full evaluation; the "
              "Pareto points are measured on the held-out split and pareto.json and the report are written.")
@LIMIT
@DATA_ROOTS
@FAIL_IF_INFEASIBLE
@JSON
def resume(run_dir: Path, workers: int | None, ray_address: str | None, max_full_evaluations: int | None,
           max_hours: float | None, finish: bool, limit_items: tuple[str, ...], data_roots: tuple[Path, ...],
           fail_if_infeasible: bool, as_json: bool) -> None:
    """Continue the search of RUN_DIR (killed, interrupted, or out of budget: raise it
    with --max-full-evaluations), or end it now (--finish). Recorded results are reused,
    never evaluated again."""
    from autocompress.api import open_run
    from autocompress.errors import SearchInterrupted
    from autocompress.limits import Limits

    _interrupt_on_sigterm()
    if finish and max_full_evaluations is not None:
        raise click.UsageError("--finish ends the search at the full evaluations it has; drop --max-full-evaluations")
    run = open_run(run_dir)
    display, update = progress_display(max_full_evaluations or 1)
    try:
        with display:
            run.resume(max_full_evaluations=max_full_evaluations, max_hours=max_hours, finish=finish, workers=workers,
                       ray_address=ray_address, limits=Limits.parse(limit_items),
                       data_roots=[str(p) for p in data_roots] or None, on_progress=update, say=say)
    except SearchInterrupted:
        _interrupted(run.run_dir)
    _finish_search(run.run_dir, fail_if_infeasible, as_json)


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
               f"(stored: {report['stored']['full']}); stopped early {p.early_stopped} ({p.stopped_feasible} as "
               f"feasible, {p.completed} completed); "
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
        print_pareto(document)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@JSON
def report(run_dir: Path, as_json: bool) -> None:
    """Write report.html (plots embedded) and the PNGs into RUN_DIR (also while it runs)."""
    from autocompress.engine import RunStore
    from autocompress.errors import UserInputError
    from autocompress.report import PLOTS, build_report

    RunStore.open_reader(run_dir).close()  # a clear error for a path that is not a run directory
    try:
        path = build_report(run_dir)
    except ValueError as error:
        raise UserInputError(str(error)) from None
    names = list(PLOTS) + (["energy"] if (Path(run_dir) / "energy.png").is_file() else [])
    plots = [str(Path(run_dir) / f"{name}.png") for name in names]
    if as_json:
        click.echo(json.dumps({"report": str(path), "plots": plots}, indent=2))
        return
    click.echo(f"report: {path}")
    click.echo("plots:  " + ", ".join(plots))


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
@LIMIT
@DATA_ROOTS
@JSON
def finetune(run_dir: Path, point_ids: tuple[str, ...], epochs: int | None, workers: int | None,
             ray_address: str | None, restart: bool, overrides: tuple[str, ...], limit_items: tuple[str, ...],
             data_roots: tuple[Path, ...], as_json: bool) -> None:
    """Recovery fine-tuning of compressed candidates of RUN_DIR: quantization-aware
    training with distillation from the uncompressed model, the candidate's structure
    and bit-widths kept. Prints each point's accuracy before and after; `export
    --tuned` writes the tuned model. A killed fine-tuning resumes from its last epoch
    when run again."""
    from autocompress.api import open_run
    from autocompress.engine.finetune import held_out_text
    from autocompress.limits import Limits

    _interrupt_on_sigterm()
    overrides = tuple(overrides) + ((f"finetune.epochs={epochs}",) if epochs else ())
    tuned = open_run(run_dir).finetune(list(point_ids) or None, workers=workers, ray_address=ray_address,
                                       restart=restart, limits=Limits.parse(limit_items), overrides=overrides,
                                       data_roots=[str(p) for p in data_roots] or None,
                                       progress=not (as_json or QUIET["on"]), say=say)
    if as_json:
        click.echo(json.dumps([t.details for t in tuned], indent=2))
        return
    for entry in (t.details for t in tuned):
        point = entry["id"]
        held = held_out_text(entry)
        click.echo(f"{point}: {entry['memory_bytes']:,} bytes, top-1 {entry['accuracy_before']:.2f} % -> "
                   f"{entry['accuracy']:.2f} % (drop {entry['accuracy_drop_before']:+.2f} -> "
                   f"{entry['accuracy_drop']:+.2f}), feasible {'yes' if entry['feasible_before'] else 'no'} -> "
                   f"{'yes' if entry['feasible'] else 'no'}{held}")
    if tuned:
        click.echo(f"pareto.json: {Path(run_dir) / 'pareto.json'} (\"tuned\" block); export a tuned point with "
                   f"`autocompress export {run_dir} --point ID --tuned --out FILE`")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--point", "point_id", help="The candidate id (a Pareto point's `id`); default: the recommended point.")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path), help="The file to write.")
@click.option("--tuned", is_flag=True, help="The point's fine-tuned model (`autocompress finetune`) instead of "
              "the search's.")
@JSON
def export(run_dir: Path, point_id: str | None, out_file: Path, tuned: bool, as_json: bool) -> None:
    """Write the packed compressed model of a fully evaluated candidate (safetensors).

    Load it with `autocompress.load(FILE)` (weights only, no pickle), or evaluate it
    with `autocompress evaluate SPEC --model FILE`.
    """
    from autocompress.api import open_run

    info = open_run(run_dir).export(point_id, out_file, tuned=tuned, say=say).details
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if info.get("tuned"):
        click.echo(f"wrote {info['path']}: {info['file_bytes']:,} bytes (footprint {info['memory_bytes']:,}); "
                   f"fine-tuned accuracy {info['accuracy']:.2f} % top-1 (untuned {info['accuracy_before']:.2f} %)")
        return
    if info["early_stopped"]:
        side = "feasible" if info.get("stop") == "feasible" else "infeasible"
        accuracy = (f"validation stopped early as certainly {side}: about {info['accuracy']:.2f} % top-1, "
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
