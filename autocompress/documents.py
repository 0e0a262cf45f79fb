"""Documents from people: YAML and JSON read into plain data, with bounded work.

A spec (or a search-space file) may come from anyone who can reach the service, so
reading one must cost time and memory in proportion to its bytes. This module
refuses, with a message that names the problem:

- YAML aliases that expand past ``max_nodes`` (a 1 KB "billion laughs" would otherwise
  expand to gigabytes), recursive aliases, and merge keys (``<<``);
- nesting deeper than ``max_depth`` (the parsers recurse; deep nesting would end in a
  RecursionError);
- anything but plain data: mappings with string keys, lists, strings, integers of at
  most ``max_digits`` digits, finite floats, booleans and null (no ``!!binary``,
  ``!!set``, timestamps stay strings, no Python tags);
- NUL characters in strings, duplicate keys.
"""

from __future__ import annotations

import io
import json
import math
import reprlib
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["DocumentError", "ParseBounds", "parse_json", "parse_yaml", "short_repr"]


class DocumentError(ValueError):
    """A document that is not plain data within the bounds (the message says why)."""


@dataclass(frozen=True)
class ParseBounds:
    max_depth: int = 32  # a spec is about 5 deep; custom model args a little deeper
    max_nodes: int = 20_000  # after alias expansion; a spec has about 100
    max_digits: int = 30  # integers; more than any size a spec can sensibly hold


DEFAULT_BOUNDS = ParseBounds()

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlong = 40
_short.maxlist = _short.maxdict = _short.maxtuple = _short.maxset = 6
_short.maxlevel = 3


def short_repr(value: Any) -> str:
    """A bounded repr: never builds the repr of a whole large value."""
    return _short.repr(value)


# --------------------------------------------------------------------------- YAML

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_TAG}{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map")}


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader limited to plain data, with a depth bound while composing."""

    bounds: ParseBounds = DEFAULT_BOUNDS

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self.bounds.max_depth:
                mark = self.peek_event().start_mark
                raise DocumentError(f"nested more than {self.bounds.max_depth} levels deep (at line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# timestamps stay strings: no field of a spec is a date
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_TAG}timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlainLoader.yaml_constructors = {tag: f for tag, f in yaml.SafeLoader.yaml_constructors.items() if tag in _PLAIN_TAGS}


def _refuse_tag(loader: _PlainLoader, node: yaml.Node) -> Any:
    if node.tag == f"{_TAG}merge":
        problem = "merge keys ('<<') are not supported; write the keys out"
    else:
        problem = f"the tag '{node.tag}' is not allowed; only plain data (mappings, lists, strings, numbers, " \
                  "booleans, null)"
    raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _construct_int(loader: _PlainLoader, node: yaml.ScalarNode) -> int:
    if sum(c.isdigit() for c in node.value) > loader.bounds.max_digits:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of more than {loader.bounds.max_digits} digits", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_float(loader: _PlainLoader, node: yaml.ScalarNode) -> float:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        raise yaml.constructor.ConstructorError(None, None, f"'{node.value}' is not a finite number",
                                                node.start_mark)
    return value


def _construct_str(loader: _PlainLoader, node: yaml.ScalarNode) -> str:
    value = loader.construct_scalar(node)
    if "\x00" in value:
        raise yaml.constructor.ConstructorError(None, None, "a string holds a NUL character", node.start_mark)
    return value


def _construct_mapping(loader: _PlainLoader, node: yaml.MappingNode) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        if key_node.tag == f"{_TAG}merge":
            _refuse_tag(loader, key_node)
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be strings, not {type(key).__name__}", key_node.start_mark)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{short_repr(key)[1:-1]}'",
                                                    key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_PlainLoader.add_constructor(f"{_TAG}int", _construct_int)
_PlainLoader.add_constructor(f"{_TAG}float", _construct_float)
_PlainLoader.add_constructor(f"{_TAG}str", _construct_str)
_PlainLoader.add_constructor(f"{_TAG}map", _construct_mapping)
_PlainLoader.add_constructor(None, _refuse_tag)


def _expanded(node: yaml.Node, bounds: ParseBounds) -> None:
    """Refuse a node graph whose aliases expand past the bounds (or loop)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(current: yaml.Node, depth: int) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise DocumentError("an alias refers to a node that contains it (a recursive alias)")
        if depth > bounds.max_depth:
            raise DocumentError(f"aliases expand to more than {bounds.max_depth} levels of nesting")
        open_nodes.add(key)
        total = 1
        if isinstance(current, yaml.SequenceNode):
            children = current.value
        elif isinstance(current, yaml.MappingNode):
            children = [child for pair in current.value for child in pair]
        else:
            children = []
        for child in children:
            total += size(child, depth + 1)
            if total > bounds.max_nodes:
                raise DocumentError(f"holds more than {bounds.max_nodes:,} values once its aliases are expanded")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(node, 1)


def parse_yaml(text: str, source: str = "document", bounds: ParseBounds = DEFAULT_BOUNDS) -> Any:
    """Plain data from YAML text; raise :class:`DocumentError` (or yaml.YAMLError) when
    it is not plain data within ``bounds``."""
    stream = io.StringIO(text)
    stream.name = source  # YAML error marks name the source
    loader_class = type("_BoundedLoader", (_PlainLoader,), {"bounds": bounds})
    loader = loader_class(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, bounds)
        return loader.construct_document(node)
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- JSON


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    mapping: dict = {}
    for key, value in pairs:
        if key in mapping:
            raise DocumentError(f"duplicate key '{short_repr(key)[1:-1]}'")
        mapping[key] = value
    return mapping


def _json_constant(name: str) -> Any:
    raise DocumentError(f"'{name}' is not a finite number")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentError(f"'{text[:40]}' is not a finite number")
    return value


def _json_int(bounds: ParseBounds):
    def convert(text: str) -> int:
        if len(text.lstrip("-")) > bounds.max_digits:
            raise DocumentError(f"an integer of more than {bounds.max_digits} digits")
        return int(text)

    return convert


def _json_depth(text: str, bounds: ParseBounds) -> None:
    """Refuse nesting past the bound before the (recursive) decoder sees it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > bounds.max_depth:
                raise DocumentError(f"nested more than {bounds.max_depth} levels deep")
        elif char in "]}":
            depth -= 1


def _check_plain(value: Any, bounds: ParseBounds) -> None:
    """Count values and refuse NUL characters (JSON has no aliases, so this is its size)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > bounds.max_nodes:
            raise DocumentError(f"holds more than {bounds.max_nodes:,} values")
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise DocumentError("a string holds a NUL character")


def parse_json(text: str, bounds: ParseBounds = DEFAULT_BOUNDS) -> Any:
    """Plain data from JSON text; raise :class:`DocumentError` or json.JSONDecodeError."""
    _json_depth(text, bounds)
    value = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant,
                       parse_float=_json_float, parse_int=_json_int(bounds))
    _check_plain(value, bounds)
    return value
