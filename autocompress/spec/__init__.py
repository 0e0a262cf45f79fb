"""The constraint spec: what a user asks autocompress to do.

A spec is a YAML or JSON document validated by the pydantic models below. Unknown
keys are errors (a typo must never be silently ignored), and every error names the
field path, the bad value and what is allowed. Relative paths in a spec are
resolved against the folder of the spec file, so a spec means the same thing from
any working directory; validated specs hold absolute paths.

``load_spec(path)`` reads and validates a file; ``validate_spec(data, base_dir)``
validates an already-parsed mapping (the HTTP service uses this);
``spec_json_schema()`` is the JSON Schema that editors and the service validate
against.

The package's modules follow the document: ``fields`` (the strict base and path fields),
``model``, ``data``, ``sections`` (the smaller sections), ``document`` (``Spec`` and its
cross-section checks), ``loading`` and ``messages`` (errors as the user reads them).
"""

from __future__ import annotations

from autocompress.errors import SpecError
from autocompress.spec.data import CalibrationSpec, DataSpec, TransformSpec, ValidationSpec
from autocompress.spec.document import Spec
from autocompress.spec.fields import FieldError
from autocompress.spec.loading import (
    MAX_SPEC_BYTES,
    apply_overrides,
    load_spec,
    merge_sections,
    parse_spec_text,
    read_spec_file,
    spec_json_schema,
    validate_spec,
)
from autocompress.spec.messages import format_validation_errors
from autocompress.spec.model import CustomModel, FamilyInfo, ModelSpec, declare_family, family_info, family_names
from autocompress.spec.sections import (
    BudgetSpec,
    ConstraintsSpec,
    EvaluationSpec,
    FinetuneSpec,
    SpaceSpec,
    StrategySpec,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "BudgetSpec",
    "CalibrationSpec",
    "ConstraintsSpec",
    "CustomModel",
    "FamilyInfo",
    "DataSpec",
    "EvaluationSpec",
    "FieldError",
    "FinetuneSpec",
    "ModelSpec",
    "SpaceSpec",
    "Spec",
    "SpecError",
    "StrategySpec",
    "TransformSpec",
    "ValidationSpec",
    "apply_overrides",
    "declare_family",
    "family_info",
    "family_names",
    "format_validation_errors",
    "load_spec",
    "merge_sections",
    "parse_spec_text",
    "read_spec_file",
    "spec_json_schema",
    "validate_spec",
]
