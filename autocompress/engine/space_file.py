"""A spec's search space: its space file (or the family's default) and inline overrides."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from autocompress.documents import parse_yaml
from autocompress.errors import UserInputError
from autocompress.spec import family_info
from autocompress.searching import SearchSpace, SpaceDefinition


def default_space_file(family: str) -> Traversable:
    """The family's default space, ``autocompress/search_spaces/<name>.yaml``: package data,
    read through importlib.resources, so it is found wherever (and however) the package is installed."""
    space = family_info(family).space  # the family's registration names it
    resource = resources.files("autocompress") / "search_spaces" / f"{space}.yaml" if space else None
    if resource is None or not resource.is_file():
        raise UserInputError(f"space.file: no default search space for family '{family}'; give space.file")
    return resource


MAX_SPACE_FILE_BYTES = 1 << 20


def space_definition(spec) -> SpaceDefinition:
    path = Path(spec.space.file) if spec.space.file else default_space_file(spec.model.family)
    try:
        if isinstance(path, Path) and path.stat().st_size > MAX_SPACE_FILE_BYTES:  # the user's file
            raise ValueError(f"larger than {MAX_SPACE_FILE_BYTES >> 20} MiB; a search-space file is a few hundred bytes")
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"a search-space file is a mapping (family, prune, bits, ...), not a {type(data).__name__}")
        definition = SpaceDefinition.from_mapping(data, source=str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError) as error:
        raise UserInputError(f"space.file: cannot use {path}: {error}") from None
    if spec.space.prune_rates is not None:
        definition.prune_rates = tuple(sorted(set(spec.space.prune_rates) | {0.0}))
    if spec.space.bits is not None:
        definition.bits = tuple(sorted(set(spec.space.bits) | {32}, reverse=True))
    definition.search = spec.space.search
    definition.granularity = spec.space.granularity
    definition.outside_blocks = spec.space.outside_blocks
    return definition


def build_space(spec, groups, layers) -> SearchSpace:
    try:
        return SearchSpace.build(groups.groups, layers, space_definition(spec))
    except ValueError as error:
        raise UserInputError(f"space: {error}") from None
