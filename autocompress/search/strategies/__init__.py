"""The registered strategies (importing this package registers them)."""

from autocompress.search.strategies import prioritized, sampling, walks  # noqa: F401
