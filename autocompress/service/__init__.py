"""The compression service: an HTTP API over run directories, with searches run as
local processes or Ray Jobs.

Its names load on first use: a job's supervisor (``python -m autocompress.service.supervisor``)
imports this package and must not pay for FastAPI at every job start."""

_SOURCES = {
    "ServiceConfig": "app", "create_app": "app", "JobManager": "jobs",
    "check_token": "token", "write_token_file": "token",
}

__all__ = sorted(_SOURCES)  # noqa: PLE0605 (the names _SOURCES maps)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'autocompress.service' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"autocompress.service.{_SOURCES[name]}"), name)
