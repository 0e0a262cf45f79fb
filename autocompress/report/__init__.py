"""Plots and the HTML report of a run.

Its names load on first use: the service imports ``autocompress.report.style`` (the report's
style sheet, for its Content-Security-Policy) and must not pay for matplotlib."""

_SOURCES = {"PLOTS": "build", "build_report": "build"}

__all__ = sorted(_SOURCES)  # noqa: PLE0605 (the names _SOURCES maps)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'autocompress.report' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"autocompress.report.{_SOURCES[name]}"), name)
