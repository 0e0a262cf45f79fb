"""The ``autocompress`` command line.

Exit codes: 0 done, 2 bad input (spec, paths, checkpoint, data), 3 failed, 4 no
feasible point (``--fail-if-infeasible``), 130 interrupted. Errors a user can cause print one clear message, never a traceback
(``--debug`` shows it).

The commands live in ``spec_commands`` (spec, model, service) and ``run_commands`` (a search
and its run directory); ``common`` holds the group and the shared options, ``render`` what
a search shows.
"""

from __future__ import annotations

import sys

import click

from autocompress.cli import run_commands, spec_commands  # noqa: F401 (they register the commands)
from autocompress.cli.common import cli, say
from autocompress.errors import EXIT_FAILED, EXIT_INTERRUPTED, AutocompressError, record_error

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; turn errors into messages and exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return _main(argv, debug)
    except BaseException as error:  # only --debug lets one through
        record_error(error, EXIT_FAILED)
        raise


def _main(argv: list[str] | None, debug: bool) -> int:
    try:
        cli.main(args=argv, prog_name="autocompress", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        say("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as error:
        error.show()
        return record_error(error, error.exit_code)
    except AutocompressError as error:
        if debug:
            raise
        say(f"error: {error}")
        return record_error(error, error.exit_code)
    except Exception as error:  # a bug or an environment failure: say so, exit 3
        if debug:
            raise
        say(f"error: unexpected {type(error).__name__}: {error} (run with --debug for the traceback)")
        return record_error(error, EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
