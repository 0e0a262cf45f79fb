"""Resolving a path without looking outside a set of root folders.

``os.path.realpath`` resolves symbolic links by looking at every component, wherever it
leads: asked about ``/etc/shadow`` or a link to it, it stats files outside the roots
before anyone can refuse them. :func:`resolve_inside` walks the path one component at
a time from the file-system root and stops, without touching it, at the first
component (or link target) that leaves the roots. Nothing outside the roots is opened,
read or even stat'ed; the roots' own ancestors are passed through unlooked-at (the roots
are real paths, so no link can hide among them).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from typing import Sequence

MAX_LINKS = 40  # as the kernel's ELOOP


def inside(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or below one (both absolute and normalised)."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _ancestor(path: str, roots: Sequence[str]) -> bool:
    return any(root.startswith(path.rstrip(os.sep) + os.sep) for root in roots)


def resolve_inside(path: str, roots: Sequence[str]) -> str | None:
    """The real path of absolute ``path`` if it lies inside ``roots`` (real paths
    themselves), symlinks followed; None as soon as it would leave them. A component
    that does not exist ends the walk: the rest is joined as written (the caller's
    existence check then reports it)."""
    resolved = os.sep
    pending = deque(part for part in path.split(os.sep) if part)
    links = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        if _ancestor(candidate, roots) and not inside(candidate, roots):
            resolved = candidate  # on the way down to a root: a real directory, nothing to look at
            continue
        if not inside(candidate, roots):
            return None
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            rest = os.path.normpath(os.path.join(candidate, *pending))
            return rest if inside(rest, roots) else None
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > MAX_LINKS:
                return None
            target = os.readlink(candidate)
            if os.path.isabs(target):
                resolved = os.sep
            pending.extendleft(reversed([p for p in target.split(os.sep) if p]))
            continue
        resolved = candidate
    return resolved if inside(resolved, roots) else None
