"""What the service accepts as a spec: the same validation as ``autocompress validate``,
plus what a shared server must refuse.

- The body is read as plain data with bounded work (autocompress.documents): no
  alias bombs, no deep nesting, no tags, no huge integers.
- Paths (``vocabulary.PATH_FIELDS`` but ``output.run_dir``) must be strings that resolve
  inside the configured data roots,
  symlinks followed, '~' refused; relative paths are read from the first data root.
  The check runs on the resolved path, the one the search will open, before anything
  at it is looked at; messages quote paths only as the request gave them.
- ``output.run_dir`` and ``execution.ray_address`` belong to the service.
- ``custom`` model factories are code: only the ``module:function`` pairs the operator
  allowed (``--allow-factory``) are accepted, and the service never imports them.
- Every size is capped (autocompress.limits) by the operator's limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.errors import SpecError
from autocompress.limits import Limits, check_limits
from autocompress.spec import Spec, parse_spec_text, validate_spec
from autocompress.vocabulary import PATH_FIELDS, REFERENCE_PREFIX

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "")
LIMIT_HINT = "that is this service's cap (its operator sets caps with `autocompress serve --limit {name}=VALUE`)"


@dataclass
class Policy:
    """What this service lets a submission use."""

    data_roots: list[Path] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    allow_factories: list[str] = field(default_factory=list)  # exact "module:function" pairs


class UnsupportedMediaType(ValueError):
    pass


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The request body as a mapping (JSON, or YAML with a YAML content type)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in YAML_TYPES + JSON_TYPES:
        raise UnsupportedMediaType(f"send the spec as application/json or application/yaml, not {kind[:60]!r}")
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


def check_submission(data: dict[str, Any], policy: Policy) -> Spec:
    """Validate a submitted spec for this service; raise SpecError listing every problem."""
    issues: list[tuple[str, str]] = []
    for loc in PATH_FIELDS:
        value = _get(data, loc)
        if loc == "output.run_dir":
            if value is not None:
                issues.append((loc, "remove it: the service puts each search in its own run directory"))
        elif value is not None and not isinstance(value, str):
            issues.append((loc, f"a path is a string, not {type(value).__name__}"))
        elif value and not value.startswith(REFERENCE_PREFIX) and not policy.data_roots:
            issues.append((loc, "this service has no data roots, so it accepts no file paths (its operator starts "
                                "it with --data-roots DIR)"))
    if _get(data, "execution.ray_address") is not None:
        issues.append(("execution.ray_address", "remove it: the service's --ray-address decides where searches run"))
    model = data.get("model")
    if isinstance(model, dict) and model.get("family") == "custom":
        factory = model.get("factory")
        if not isinstance(factory, str) or factory not in policy.allow_factories:
            allowed = ", ".join(policy.allow_factories) or "none"
            shown = factory[:120] if isinstance(factory, str) else type(factory).__name__
            issues.append(("model.factory", f"custom factory '{shown}' is not allowed on this service (allowed: "
                                            f"{allowed}; the operator adds module:function pairs with --allow-factory)"))
    if issues:  # refuse before validating
        raise SpecError("spec", issues)

    roots = policy.data_roots
    spec = validate_spec(data, base_dir=roots[0] if roots else None, source="spec", confine=roots)
    check_limits(spec, policy.limits, hint=LIMIT_HINT, count_custom=False)
    return spec
