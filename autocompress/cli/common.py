"""What every command shares: the ``autocompress`` group, the messages on stderr, and the
options several commands take (``--set``, ``--limit``, ``--data-roots``, execution)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from autocompress.version import __version__

log = logging.getLogger("autocompress")


QUIET = {"on": False}  # --quiet: no messages and no progress display (errors and results still print)


def say(message: str) -> None:
    if not QUIET["on"]:
        click.echo(message, err=True)


JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (messages stay on "
                    "stderr).")


SET = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a spec field, e.g. --set data.root=/data/imagenet/val (VALUE read as YAML; repeatable).")
LIMIT = click.option(
    "--limit", "limit_items", multiple=True, metavar="NAME=VALUE",
    help="Raise (or lower) a cap on what a spec may ask for, e.g. --limit model.T=128 (repeatable; "
         "`autocompress limits` lists them).")


def load_checked_spec(spec_file: Path, overrides: tuple[str, ...] = (), limit_items: tuple[str, ...] = (),
                      data_roots: tuple[Path, ...] = ()):
    """A spec file read, validated and checked against the caps (and, with
    ``data_roots``, confined to those folders)."""
    from autocompress.limits import Limits, check_limits
    from autocompress.spec import load_spec

    limits = Limits.parse(limit_items)
    spec = load_spec(spec_file, overrides=overrides, confine=list(data_roots) if data_roots else None)
    check_limits(spec, limits, source=str(spec_file))
    return spec


class _Commands(click.Group):
    """Lists each command with its whole first sentence, wrapped (click cuts it to the
    terminal's width minus the longest name, which left 14 of 15 summaries ending in ...)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=10_000))
                for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autocompress")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("-q", "--quiet", is_flag=True, help="No messages and no progress display on stderr; errors and "
              "results still print.")
def cli(debug: bool, quiet: bool) -> None:
    """Constraint-driven compression search for Spiking Vision Transformers."""
    QUIET["on"] = quiet
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)


EXECUTION_OPTIONS = [
    click.option("--workers", type=click.IntRange(min=0), help="Evaluation workers (Ray actors); 0 evaluates in "
                 "this process. Overrides execution.workers."),
    click.option("--ray-address", help="Join this Ray cluster ('auto' or host:port) instead of starting a local "
                 "Ray. Overrides execution.ray_address."),
    click.option("--max-full-evaluations", type=click.IntRange(min=1), help="Override budget.max_full_evaluations."),
]


DATA_ROOTS = click.option(
    "--data-roots", "data_roots", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Only accept spec paths inside these folders, symlinks resolved (the HTTP service runs its jobs so).")


def execution_options(function):
    for option in reversed(EXECUTION_OPTIONS):
        function = option(function)
    return function
