"""The documentation: the site builds with warnings as errors, its references are generated
from the code and current, every spec field and CLI option is described, the Python API's
quick start runs as written, and the README stays short."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from conftest import HANG_GUARD, REPO

DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "spec" / "index.html").is_file()


def test_the_generated_references_are_current():
    generator = _generator()
    stale = [name for name, build in generator.PAGES.items() if (DOCS / "reference" / name).read_text() != build()]
    assert not stale, f"stale references (run `make docs`): {stale}"
    # no Python repr leaks into a page (click 8.3's UNSET default printed as `Sentinel.UNSET` once)
    leaks = [name for name in generator.PAGES if re.search(r"Sentinel\.|object at 0x|<class '", (DOCS / "reference" / name).read_text())]
    assert not leaks, f"Python reprs in {leaks}"


def _models(annotation) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def undescribed_spec_fields() -> list[str]:
    from autocompress.spec import Spec

    missing, seen = [], set()

    def walk(model, prefix):
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{prefix}{name} ({model.__name__})")
            for sub in _models(field.annotation):
                walk(sub, f"{prefix}{name}.")

    walk(Spec, "")
    return missing


def undescribed_cli_options() -> list[str]:
    import click

    from autocompress.cli import cli

    missing = [f"autocompress {param.opts[0]}" for param in cli.params
               if isinstance(param, click.Option) and not param.help and param.name != "help"]
    for name, command in cli.commands.items():
        if not (command.help or "").strip():
            missing.append(f"autocompress {name} (no help text)")
        missing += [f"autocompress {name} {param.opts[0]}" for param in command.params
                    if isinstance(param, click.Option) and not (param.help or "").strip()]
    return missing


def test_every_spec_field_and_cli_option_is_described():
    assert undescribed_spec_fields() == []
    assert undescribed_cli_options() == []


def test_a_field_without_a_description_or_an_option_without_help_is_found(monkeypatch):
    """The check above can fail: a description taken away, an option added without help."""
    import click

    from autocompress.cli import cli
    from autocompress.spec import BudgetSpec

    monkeypatch.setattr(BudgetSpec.model_fields["max_hours"], "description", None)
    assert any(m.startswith("budget.max_hours") for m in undescribed_spec_fields())
    monkeypatch.setattr(cli.commands["status"], "params", [*cli.commands["status"].params, click.Option(["--new"])])
    assert "autocompress status --new" in undescribed_cli_options()


def test_the_readme_is_short_and_links_only_existing_docs():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target


def test_the_python_api_quick_start_runs_as_written(tmp_path, reference_cache):
    """The first Python block of docs/python-api.md, run from a copy of the repository's
    digits spec in a fresh interpreter (the digits reference cached, as after `make demo`):
    it prints the state and the points, writes the model, and a library call changed no
    process-wide setting (Optuna's log level, sys.path, the root logger) and printed nothing
    of its own."""
    block = re.search(r"```python\n(.*?)```", (DOCS / "python-api.md").read_text(), re.S).group(1)
    (tmp_path / "experiments" / "digits").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "digits" / "spec.yaml", tmp_path / "experiments" / "digits")
    program = (
        "import logging, sys, optuna\n"
        "before = (optuna.logging.get_verbosity(), list(sys.path), logging.getLogger().handlers[:],"
        " logging.getLogger().level)\n"
        + block +
        "after = (optuna.logging.get_verbosity(), list(sys.path), logging.getLogger().handlers[:],"
        " logging.getLogger().level)\n"
        "assert before == after, (before, after)\n"
        "print('RUN_DIR', run.run_dir)\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=HANG_GUARD,
                          env={**os.environ, "PYTHONPATH": str(REPO), "AUTOCOMPRESS_CACHE": str(reference_cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "done" and done.stderr == "", (done.stdout, done.stderr[-2000:])
    assert re.fullmatch(r"\d+\.\d\d % on \d+ images, [\d,]+ bytes", lines[-2]), lines
    assert (tmp_path / "model.safetensors").is_file()
    run_dir = lines[-1].split(" ", 1)[1]
    document = json.loads(open(os.path.join(run_dir, "pareto.json")).read())
    from autocompress.engine.pareto_file import FORMAT_DOC

    assert set(document) == set(FORMAT_DOC), set(document) ^ set(FORMAT_DOC)  # the pareto.json reference is whole
    shown = lines[1:-2]
    assert [line.split()[0] for line in shown] == [p["id"] for p in document["points"]]
