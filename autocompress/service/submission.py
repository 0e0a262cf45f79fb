"""What the service accepts as a spec: the same validation as ``autocompress validate``,
plus what a shared server must refuse.

- Paths (``model.checkpoint``, ``data.root``, ``data.calibration.root``,
  ``space.file``) must resolve inside the configured data roots, symlinks followed;
  relative paths are read from the first data root. The check runs before the spec
  is validated, so a request cannot learn whether a file outside the roots exists.
- ``output.run_dir`` and ``execution.ray_address`` belong to the service.
- ``custom`` model factories are code: only modules the operator allowed
  (``--allow-factory``) are imported.
- Budgets must be sane: no more workers than the service may use, no absurd numbers
  of evaluations or hours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.errors import SpecError
from autocompress.spec import REFERENCE_PREFIX, Spec, parse_spec_text, validate_spec

MAX_FULL_EVALUATIONS = 100_000
MAX_HOURS = 24 * 31
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "")


@dataclass
class Limits:
    data_roots: list[Path] = field(default_factory=list)
    max_workers: int = 1
    allow_factories: list[str] = field(default_factory=list)


class UnsupportedMediaType(ValueError):
    pass


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The request body as a mapping (JSON, or YAML with a YAML content type)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in YAML_TYPES + JSON_TYPES:
        raise UnsupportedMediaType(f"send the spec as application/json or application/yaml, not {kind!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("spec", [("", "the request body is not UTF-8 text")]) from None
    return parse_spec_text(text, "spec", fmt="yaml" if kind in YAML_TYPES else "json")


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _inside(path: str, roots: list[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real == str(root) or real.startswith(str(root) + os.sep) for root in roots)


def check_submission(data: dict[str, Any], limits: Limits) -> Spec:
    """Validate a submitted spec for this service; raise SpecError listing every problem."""
    roots = [Path(os.path.realpath(r)) for r in limits.data_roots]
    base = roots[0] if roots else Path(os.path.realpath(os.getcwd()))
    issues: list[tuple[str, str]] = []
    for loc in ("model.checkpoint", "data.root", "data.calibration.root", "space.file"):
        value = _get(data, loc)
        if not isinstance(value, str) or not value or value.startswith(REFERENCE_PREFIX):
            continue
        path = value if os.path.isabs(value) else os.path.join(base, value)
        if not roots:
            issues.append((loc, f"'{value}': this service has no data roots, so it accepts no file paths "
                                "(its operator starts it with --data-roots DIR)"))
        elif not _inside(path, roots):
            issues.append((loc, f"'{value}' resolves outside the service's data roots "
                                f"({', '.join(map(str, roots))}); only files under them can be used"))
    for loc, owner in (("output.run_dir", "the service puts each search in its own run directory"),
                       ("execution.ray_address", "the service's --ray-address decides where searches run")):
        if _get(data, loc) is not None:
            issues.append((loc, f"remove it: {owner}"))
    model = data.get("model")
    if isinstance(model, dict) and model.get("family") == "custom":
        module = str(model.get("factory", "")).split(":")[0]
        if module not in limits.allow_factories:
            allowed = ", ".join(limits.allow_factories) or "none"
            issues.append(("model.factory", f"custom factory module '{module}' is not allowed on this service "
                                            f"(allowed: {allowed}; the operator adds modules with --allow-factory)"))
    if issues:  # refuse before validating: nothing outside the roots is looked at
        raise SpecError("spec", issues)

    spec = validate_spec(data, base_dir=base, source="spec")
    if spec.execution.workers > limits.max_workers:
        issues.append(("execution.workers", f"{spec.execution.workers} workers asked for; this service runs at most "
                                            f"{limits.max_workers} per search"))
    if spec.budget.max_full_evaluations > MAX_FULL_EVALUATIONS:
        issues.append(("budget.max_full_evaluations", f"{spec.budget.max_full_evaluations} is more than this "
                                                      f"service allows ({MAX_FULL_EVALUATIONS})"))
    if spec.budget.max_hours is not None and spec.budget.max_hours > MAX_HOURS:
        issues.append(("budget.max_hours", f"{spec.budget.max_hours:g} hours is more than this service allows "
                                           f"({MAX_HOURS})"))
    if issues:
        raise SpecError("spec", issues)
    return spec
