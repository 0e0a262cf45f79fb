"""Where autocompress keeps what it can rebuild: trained reference models and decoded
validation sets. ``$AUTOCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/autocompress``, else
``~/.cache/autocompress``; on a cluster, a node-local disk (each node builds its own)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("AUTOCOMPRESS_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "autocompress"
