"""The one kind of progress bar the package draws (evaluation, reference training, a search)."""

from __future__ import annotations


def progress_bar(head: str, tail: str, *, enabled: bool = True, remaining: bool = False):
    """A transient rich bar on stderr: ``head [bar] n/N tail elapsed`` (and the time left
    with ``remaining``). ``head`` and ``tail`` are rich column formats (``{task.fields[x]}``);
    a bar not ``enabled`` draws nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn(head), BarColumn(), MofNCompleteColumn(), TextColumn(tail), TimeElapsedColumn()]
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=True, disable=not enabled)


def log_info(message: str) -> None:
    """The library's default for its ``say`` parameters: the ``autocompress`` logger at INFO, so
    that a library call prints nothing unless the caller configures logging (the CLI passes
    its own, which writes to stderr)."""
    import logging

    logging.getLogger("autocompress").info(message)
