"""Reading a spec: parsing YAML or JSON with size limits, ``--set`` overrides,
validation with the spec's folder as the base of relative paths, the JSON Schema."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from autocompress.documents import DocumentError, parse_json, parse_yaml
from autocompress.errors import SpecError
from autocompress.spec.document import Spec
from autocompress.spec.messages import format_validation_errors
from autocompress.vocabulary import (
    PATH_FIELDS,
    REFERENCE_PREFIX,
)

MAX_SPEC_BYTES = 1 << 20


def parse_spec_text(text: str, source: str, *, fmt: Literal["yaml", "json"] = "yaml") -> dict[str, Any]:
    """Parse spec text into a mapping of plain data (bounded: see autocompress.documents),
    or raise SpecError."""
    try:
        data = parse_json(text) if fmt == "json" else parse_yaml(text, source)
    except json.JSONDecodeError as error:
        raise SpecError(source, [("", f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")]) from None
    except DocumentError as error:
        raise SpecError(source, [("", f"not accepted as a spec: {error}")]) from None
    except yaml.YAMLError as error:
        raise SpecError(source, [("", f"not valid YAML: {error}")]) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(source, [("", f"a spec is a mapping of sections (name, model, data, ...); this file is {kind}")])
    return data


def read_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a spec file (``.json`` as JSON, anything else as YAML) into a mapping."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(str(path), [("", f"the spec file is larger than {MAX_SPEC_BYTES >> 20} MiB; a spec is a "
                                             "few hundred bytes")])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), [("", "spec file not found")]) from None
    except IsADirectoryError:
        raise SpecError(str(path), [("", "is a folder; give the path of a .yaml or .json spec file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(str(path), [("", f"cannot read the spec file: {error}")]) from None
    return parse_spec_text(text, str(path), fmt="json" if path.suffix.lower() == ".json" else "yaml")


def validate_spec(
    data: dict[str, Any], *, base_dir: str | os.PathLike | None = None, source: str = "spec", check_paths: bool = True,
    confine: Sequence[str | os.PathLike] | None = None,
) -> Spec:
    """Validate a parsed spec. Relative paths resolve against ``base_dir``; with
    ``check_paths`` the files and folders it names must exist. With ``confine`` (a list
    of folders), every path must resolve inside one of them, symlinks followed, and is
    kept resolved (what the search opens is what was checked)."""
    context = {"base_dir": Path(base_dir or Path.cwd()).resolve(), "check_paths": check_paths,
               "confine": None if confine is None else [os.path.realpath(root) for root in confine]}
    try:
        spec = Spec.model_validate(data, context=context)
    except ValidationError as error:
        issues = format_validation_errors(error)
        if check_paths:
            # a missing file stops the checks across sections (they run on valid fields only): look again
            # without opening anything, so that every error is said at once, not in stages
            try:
                Spec.model_validate(copy.deepcopy(data), context={**context, "check_paths": False})
            except ValidationError as again:
                issues += [issue for issue in format_validation_errors(again) if issue not in issues]
        raise SpecError(source, issues) from None
    if spec.model.family == "spikformer" and source not in _WARNED_ALIAS:
        _WARNED_ALIAS.add(source)
        logging.getLogger("autocompress").warning(
            "%s: model.family 'spikformer' is SpikingJelly 2.0's Spikformer, now named 'spikingjelly_spikformer'; "
            "it is not the network of the official Spikformer checkpoints (use 'spikformer_imagenet' or "
            "'spikformer_cifar' for those)", source)
    return spec


_WARNED_ALIAS: set[str] = set()


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``KEY.PATH=VALUE`` assignments on a parsed spec (VALUE read as YAML: numbers,
    booleans, null, lists and strings as written). Returns a new mapping."""
    data = copy.deepcopy(data)  # plain data, bounded by the parser
    issues = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            issues.append(("", f"--set {item!r}: write KEY.PATH=VALUE, e.g. data.root=/data/imagenet/val"))
            continue
        try:
            value = parse_yaml(text, "--set") if text.strip() else ""
        except DocumentError as error:
            issues.append((key, f"--set {key.strip()}=...: {error}"))
            continue
        except yaml.YAMLError:
            value = text
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                issues.append((key, f"--set {item!r}: {part} is not a section"))
                break
            node = child
        else:
            node[parts[-1]] = value
    if issues:
        raise SpecError(source, issues)
    return data


def _absolute_paths(data: dict[str, Any], keys: Sequence[str]) -> None:
    """The path fields among ``keys`` (dotted) made absolute against the working directory,
    as any path given on a command line or in a call is read."""
    for key in keys:
        *parents, last = key.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(last) if isinstance(node, dict) else None
        if key in PATH_FIELDS and isinstance(value, str) and value and not value.startswith(REFERENCE_PREFIX) \
                and "\x00" not in value:
            node[last] = os.path.abspath(os.path.expanduser(value))


def _plain(value: Any) -> Any:
    """A section object as the fields it was given (pydantic: those set explicitly), paths as
    strings, mappings and lists element by element."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, os.PathLike) else value


def _dotted(value: Any, prefix: str) -> list[str]:
    if not isinstance(value, dict) or not value:
        return [prefix]
    return [key for name, item in value.items() for key in _dotted(item, f"{prefix}.{name}")]


def merge_sections(data: dict[str, Any], sections: Mapping[str, Any]) -> dict[str, Any]:
    """Typed overrides on a parsed spec, the Python API's ``--set``: each top-level key of
    ``sections`` names a section of the spec; a mapping or a section object
    (:class:`BudgetSpec`, ...) is merged field by field into the spec's section (a
    section object contributes the fields it was given), any other value replaces it.
    Relative paths read from the working directory. Returns a new mapping."""
    merged = copy.deepcopy(data)

    def merge(into: dict[str, Any], update: dict[str, Any]) -> None:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    update = {str(key): _plain(value) for key, value in sections.items()}
    merge(merged, update)
    _absolute_paths(merged, [key for name, value in update.items() for key in _dotted(value, name)])
    return merged


def load_spec(path: str | os.PathLike, *, check_paths: bool = True, overrides: Sequence[str] = (),
              confine: Sequence[str | os.PathLike] | None = None, sections: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file, with ``--set`` overrides (``KEY.PATH=VALUE``) and
    typed ``sections`` (:func:`merge_sections`) applied first; raise :class:`SpecError`
    listing every problem. Relative paths in overrides are read from the working
    directory, like any path on a command line. ``confine``: see :func:`validate_spec`."""
    path = Path(path)
    data = read_spec_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
        _absolute_paths(data, [item.partition("=")[0].strip() for item in overrides])
    if sections:
        data = merge_sections(data, sections)
    return validate_spec(data, base_dir=path.parent, source=str(path), check_paths=check_paths, confine=confine)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec, as a dict."""
    schema = Spec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "autocompress constraint spec"
    return schema
