"""What every section of a spec shares: the strict base model, seeds, and path fields
(resolved against the spec's folder, confined to the service's data roots)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
)

from autocompress.confine import resolve_inside

Seed = Annotated[int, Field(ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


MAX_PATH_LENGTH = 4096
MAX_NAME_LENGTH = 255  # bytes in one path component (every common file system)


class FieldError(ValueError):
    """A problem a cross-field check finds, with the field it belongs to (``model.args.in_channels``),
    so that the message carries a field path like the errors of single fields."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def _check_path_text(text: str) -> None:
    """Refuse path strings that the OS would reject with an error of its own."""
    if "\x00" in text:
        raise ValueError("a path cannot contain a NUL character")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_LENGTH:
        raise ValueError(f"a path of more than {MAX_PATH_LENGTH} bytes")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH for part in text.split(os.sep)):
        raise ValueError(f"a path component of more than {MAX_NAME_LENGTH} bytes")


def resolve_path(value: Path | None, info: ValidationInfo, *, must_exist: bool, kind: str,
                  confinable: bool = True) -> Path | None:
    """Make ``value`` absolute against the spec's folder; check it exists when asked.

    Confined validation (the service's; context ``confine``: a list of root folders,
    already realpaths) refuses '~' and resolves symlinks without looking outside the
    roots (autocompress.confine), so a path that leaves them is refused before anything
    there is looked at; its messages quote the path only as given.
    It applies to what a search reads (``confinable``), not to where it writes.
    """
    if value is None:
        return None
    context = info.context or {}
    base_dir = Path(context.get("base_dir") or Path.cwd())
    text = str(value)
    _check_path_text(text)
    confine = context.get("confine") if confinable else None
    if confine is not None:
        if text.startswith("~"):
            raise ValueError(f"'{text}': paths starting with '~' are not accepted here; give a path under a data root")
        real = resolve_inside(text if os.path.isabs(text) else os.path.join(base_dir, text), confine)
        if real is None:
            raise ValueError(f"'{text}' is outside the data roots this service reads; only paths under them are "
                             "accepted (relative paths are read from the first data root)")
        path = Path(real)
        where = f"'{text}'"
    else:
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = base_dir / path
        path = Path(os.path.normpath(path))
        where = f"{path} (given as '{text}'; relative paths are read from the spec's folder {base_dir})"
    if must_exist and context.get("check_paths", True) and not path.exists():
        raise ValueError(f"{kind} not found: {where}")
    return path
