"""The ``autocompress`` command line.

Exit codes: 0 done, 2 bad input (spec, paths, checkpoint, data), 3 failed,
130 interrupted. Errors a user can cause print one clear message, never a traceback
(``--debug`` shows it).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from autocompress import __version__
from autocompress.errors import EXIT_FAILED, EXIT_INTERRUPTED, AutocompressError, SpecError

log = logging.getLogger("autocompress")


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autocompress")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Constraint-driven compression search for Spiking Vision Transformers."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
def validate(spec_file: Path) -> None:
    """Check a constraint spec; print `ok`, or every error (exit 2)."""
    from autocompress.spec import load_spec

    load_spec(spec_file)
    click.echo("ok")


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
    """Train a reference model (by NAME, or the one a SPEC names as reference:NAME)."""
    from autocompress.reference.recipes import REFERENCES
    from autocompress.reference.train import ensure_reference, reference_metadata, reference_path, train_reference
    from autocompress.spec import REFERENCE_PREFIX, load_spec

    if list_only or name_or_spec is None:
        for name, recipe in sorted(REFERENCES.items()):
            meta = reference_metadata(name)
            state = f"trained, {meta['test_accuracy']:.2f} % test accuracy" if meta else "not trained"
            click.echo(f"{name}: {recipe.description} [{state}] {reference_path(name)}")
        return
    name = name_or_spec
    if name not in REFERENCES:
        if not Path(name).exists():
            raise click.BadParameter(f"'{name}' is neither a reference model ({', '.join(REFERENCES)}) nor a spec file")
        checkpoint = load_spec(name).model.checkpoint or ""
        if not checkpoint.startswith(REFERENCE_PREFIX):
            raise click.BadParameter(f"the spec {name} does not name a reference model (model.checkpoint: reference:NAME)")
        name = checkpoint[len(REFERENCE_PREFIX):]
    if force:
        train_reference(name, say=_say)
    else:
        path = ensure_reference(name, say=_say)
        meta = reference_metadata(name)
        click.echo(f"reference model '{name}': {meta['test_accuracy']:.2f} % test accuracy, checkpoint {path}")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(spec_file: Path, as_json: bool) -> None:
    """Evaluate the spec's (uncompressed) model: top-1 accuracy and footprint.

    A reference model named by the spec (reference:NAME) is trained first if it is
    not cached yet.
    """
    from autocompress.engine import Session
    from autocompress.spec import load_spec

    spec = load_spec(spec_file)
    session = Session.open(spec, progress=not as_json, say=_say)
    for note in session.data.notes:
        _say(f"note: {note}")
    result = session.evaluate(progress=not as_json)
    footprint = session.footprint()
    if as_json:
        click.echo(json.dumps({
            "spec": spec.name, "model": spec.model.family, "checkpoint": session.checkpoint,
            "device": str(session.device), "data": session.data.description,
            "evaluation": result.to_dict(), "footprint_bytes": footprint,
        }, indent=2))
        return
    click.echo(f"spec:          {spec.name}")
    click.echo(f"model:         {spec.model.family} ({spec.model.checkpoint or 'no checkpoint'})")
    click.echo(f"checkpoint:    {session.checkpoint}")
    click.echo(f"data:          {session.data.description}")
    click.echo(f"device:        {session.device}")
    click.echo(f"test accuracy: {result.accuracy:.2f} % top-1 ({result.correct}/{result.total} images, {result.seconds:.1f} s)")
    if result.skipped:
        click.echo(f"skipped:       {len(result.skipped)} unreadable images (first: {result.skipped[0]})")
    click.echo(f"footprint:     {footprint} bytes ({footprint / 2**20:.3f} MiB, parameters and buffers at their stored dtype)")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path), help="Where pareto.json goes (default: output.run_dir).")
@click.option("--max-full-evaluations", type=click.IntRange(min=1), help="Override budget.max_full_evaluations.")
def search(spec_file: Path, run_dir: Path | None, max_full_evaluations: int | None) -> None:
    """Search the spec's space in this process; print the Pareto set, write pareto.json.

    Ray execution, the durable run store and resume are not built yet: the spec's
    execution.workers must be 0 and execution.ray_address empty.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autocompress.engine import Session
    from autocompress.engine.pareto_file import pareto_document, write_pareto
    from autocompress.engine.search import run_search
    from autocompress.errors import UserInputError
    from autocompress.spec import load_spec

    spec = load_spec(spec_file)
    if spec.execution.workers or spec.execution.ray_address:
        raise UserInputError(
            "execution.workers / execution.ray_address: the Ray executor is not built yet; "
            "set execution.workers: 0 and leave ray_address empty to search in this process"
        )
    session = Session.open(spec, progress=True, say=_say)
    budget = max_full_evaluations or spec.budget.max_full_evaluations
    progress = Progress(
        TextColumn("full evaluations"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    )
    baseline_bytes = session.footprint()
    seen = {"probed": set(), "gated": set(), "evaluated": set()}  # candidate ids: cached repeats count once
    best: list[int] = []

    def track(request, result):
        if result.drift is not None:
            seen["probed"].add(result.candidate_id)
        if result.gate == "fail":
            seen["gated"].add(result.candidate_id)
        if result.evaluated:
            seen["evaluated"].add(result.candidate_id)
        if result.feasible and (not best or result.memory_bytes < best[0]):
            best[:] = [result.memory_bytes]
        shown = f"{1 - best[0] / baseline_bytes:.1%} saved" if best else "none yet"
        progress.update(task, completed=len(seen["evaluated"]), status=(
            f"proxy {len(seen['probed'])}, gated out {len(seen['gated'])}, best feasible: {shown}"))

    with progress:
        task = progress.add_task("search", total=budget, status="starting")
        outcome = run_search(session, max_full_evaluations=budget, on_result=track, say=_say)
    document = pareto_document(spec, outcome)
    path = write_pareto((run_dir or spec.output.run_dir) / "pareto.json", document)
    _print_pareto(document)
    click.echo(f"pareto.json: {path}")


def _print_pareto(document: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    baseline = document["baseline"]
    table = Table(title=f"Pareto set ({len(document['points'])} points; baseline {baseline['accuracy']:.2f} % top-1, "
                        f"{baseline['memory_bytes']:,} bytes)")
    for column in ("id", "top-1 %", "drop", "bytes", "saved", "feasible", "drift"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for p in document["points"]:
        marker = " *" if p["id"] == document["best"] else ""
        table.add_row(p["id"] + marker, f"{p['accuracy']:.2f}", f"{p['accuracy_drop']:+.2f}", f"{p['memory_bytes']:,}",
                      f"{p['memory_saving']:.1%}", "yes" if p["feasible"] else "no",
                      "-" if p["drift"] is None else f"{p['drift']:.4f}")
    Console(width=120).print(table)
    stats = document["statistics"]
    click.echo(f"{stats['strategy']} (seed {stats['seed']}, {stats['granularity']} granularity): "
               f"{stats['full_evaluations']} full evaluations, {stats['proxy_evaluations']} proxy evaluations, "
               f"{stats['gated_out']} gated out, {stats['failed']} failed, {stats['wall_seconds']:.0f} s; "
               f"stopped by {stats['stopped_by']}")
    if document["best"] is None:
        click.echo("no feasible point found; the near misses are in pareto.json")
    else:
        click.echo(f"best feasible point: {document['best']} (marked *)")


@cli.command()
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
def groups(spec_file: Path, as_json: bool) -> None:
    """List the model's prunable channel groups and quantizable layers.

    For custom models the groups come from tracing and each one is verified
    (pruning it must equal zeroing it); the ones left out are listed with the reason.
    """
    from autocompress.compress import find_channel_groups, quantizable_layers
    from autocompress.engine import Session
    from autocompress.spec import load_spec

    session = Session.open(load_spec(spec_file), say=_say)
    report = find_channel_groups(session.model, example=session.data.calibration[:8].to(session.device))
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into messages and exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
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
        return error.exit_code
    except SpecError as error:
        if debug:
            raise
        _say(f"error: {error}")
        return error.exit_code
    except AutocompressError as error:
        if debug:
            raise
        _say(f"error: {error}")
        return error.exit_code
    except Exception as error:  # a bug or an environment failure: say so, exit 3
        if debug:
            raise
        _say(f"error: unexpected {type(error).__name__}: {error} (run with --debug for the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
