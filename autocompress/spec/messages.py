"""Pydantic's validation errors as the user reads them: the field path as written
(union tags dropped), the bad value, what is allowed, a close key when one was misspelt."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from autocompress.documents import short_repr
from autocompress.spec.document import Spec
from autocompress.spec.fields import FieldError
from autocompress.spec.model import model_section_union
from autocompress.spec.sections import StrategySpec


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (through Annotated, Optional, Union)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or str(origin) == "types.UnionType":
        return [t for arg in get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _tags(union: Any, field: str) -> set[str]:
    return {tag for member in _unwrap(union) for tag in get_args(member.model_fields[field].annotation)}


# Discriminated unions put the tag into the error location (model.spikformer.args...);
# users never wrote that tag as a key, so it is dropped from the printed path.
def _union_tags() -> dict[str, set[str]]:
    """The tags, read when an error is formatted: a family declared later is one of them."""
    return {"model": _tags(model_section_union(), "family"), "strategy": _tags(StrategySpec, "name")}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at ``loc`` (a raw pydantic error location), if any."""
    current: list[Any] = [Spec]
    for part in loc:
        candidates = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
        nxt: list[Any] = []
        for model in candidates:
            if part in model.model_fields:
                nxt += _unwrap(model.model_fields[part].annotation)
        if not nxt:
            # a union tag selects the member whose Literal name/family equals it
            tagged = [
                t for t in current
                if isinstance(t, type) and issubclass(t, BaseModel)
                and any(part in get_args(f.annotation) for k, f in t.model_fields.items() if k in ("name", "family"))
            ]
            if not tagged:
                return None
            nxt = tagged
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


# Members of a plain union appear in locations as labels like "float" or
# "literal['auto']"; they are not keys the user wrote.
_UNION_MEMBER_LABEL = re.compile(r"^(float|int|str|bool|none)$|[\[\]'-]")


def _format_path(loc: tuple) -> str:
    parts = [p for p in loc if isinstance(p, int) or not _UNION_MEMBER_LABEL.search(str(p))]
    tags = _union_tags()
    if len(parts) >= 2 and parts[0] in tags and parts[1] in tags[parts[0]]:
        del parts[1]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def format_validation_errors(error: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(field_path, message)`` pairs a user can act on."""
    issues: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        loc, kind, ctx = tuple(item["loc"]), item["type"], item.get("ctx") or {}
        value = item.get("input")
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            message = f"unknown key '{loc[-1]}'"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
            if allowed:
                message += f" Allowed keys: {', '.join(allowed)}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            field = "family" if loc and loc[0] == "model" else "name"
            message = f"'{ctx.get('tag')}' is not a known {loc[0] if loc else ''} {field}; allowed: {ctx.get('expected_tags')}"
            loc = loc + (field,)
        elif kind == "union_tag_not_found":
            message = f"required key '{ctx.get('discriminator', '').strip(chr(39))}' is missing; allowed values: {', '.join(sorted(_union_tags().get(loc[0], [])))}"
        elif kind == "literal_error":
            message = f"{short_repr(value)} is not allowed; allowed: {ctx.get('expected')}"
        elif kind in ("value_error", "assertion_error"):
            cause = ctx.get("error")
            message = str(cause if cause is not None else item["msg"])
            if isinstance(cause, FieldError):
                loc = loc + tuple(cause.path.split("."))
        else:
            message = f"{item['msg']} (got {short_repr(value)})"
        path = _format_path(loc)
        if issues and issues[-1][0] == path:  # one line per field: a union's members say "or"
            issues[-1] = (path, f"{issues[-1][1]}; or {message}")
        else:
            issues.append((path, message))
    return issues
