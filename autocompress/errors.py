"""Errors a user can cause, each with the exit code the CLI turns it into.

Anything derived from :class:`UserInputError` is bad input (a spec, a path, a
checkpoint, a data folder) and exits 2; the message always names what is wrong and
how to fix it. :class:`AutocompressError` alone is a failure of the job itself
(exit 3).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_FAILED = 3
EXIT_INFEASIBLE = 4  # `search`/`resume --fail-if-infeasible`: the search ended without a feasible point
EXIT_INTERRUPTED = 130

# Set by whoever supervises a command (the service's jobs): the file where the command
# writes the kind of error it exited with (its log has the message).
ERROR_FILE_ENV = "AUTOCOMPRESS_ERROR_FILE"


def record_error(error: BaseException, code: int) -> int:
    """Write ``{"kind", "exit_code"}`` of the error that ends the command to the file
    :data:`ERROR_FILE_ENV` names, when it names one; return ``code``."""
    import json
    import os

    target = os.environ.get(ERROR_FILE_ENV)
    if target:
        try:
            with open(target, "w", encoding="utf-8") as handle:
                json.dump({"kind": type(error).__name__, "exit_code": code}, handle)
        except OSError:
            pass
    return code


class AutocompressError(Exception):
    """A failure of the job itself (not of its input)."""

    exit_code = EXIT_FAILED


class UserInputError(AutocompressError):
    """Bad input that the user can fix; the message says how."""

    exit_code = EXIT_BAD_INPUT


class SpecError(UserInputError):
    """A constraint spec that cannot be read or does not validate.

    ``issues`` holds one ``(field_path, message)`` pair per problem, so callers
    (the CLI, the HTTP service) can list every error, not only the first.
    """

    def __init__(self, source: str, issues: list[tuple[str, str]]):
        self.source = source
        self.issues = issues
        said = [f"{path}: {message}" if path else message for path, message in issues]
        if len(said) == 1:  # one problem, one line
            super().__init__(f"{source}: {said[0]}")
            return
        lines = [f"{source}: {len(issues)} errors"] + [f"  {line}" for line in said]
        super().__init__("\n".join(lines))


class CheckpointError(UserInputError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class DataError(UserInputError):
    """A data set that is absent or laid out wrongly."""


class ModelError(UserInputError):
    """A model that cannot be built from the spec (bad factory, bad arguments)."""


class NoFeasiblePoint(AutocompressError):
    """A search that ended without a feasible point, when the caller asked that to fail."""

    exit_code = EXIT_INFEASIBLE


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM in the CLI) during :func:`autocompress.searching` or :meth:`Run.resume`:
    a KeyboardInterrupt that says which run directory keeps the finished work
    (``autocompress.open_run(error.run_dir).resume()`` goes on)."""

    def __init__(self, run_dir) -> None:
        super().__init__(f"interrupted; every finished evaluation is kept in {run_dir}")
        self.run_dir = run_dir
