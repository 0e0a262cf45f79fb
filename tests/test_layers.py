"""The package's import graph, every import counted (those inside functions too): no
cycle, each part imports only the parts below it, and no part reaches into another
package's private modules; and the public API type-checks (mypy)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import HANG_GUARD, REPO

PACKAGE = REPO / "autocompress"

# Lowest first: a part may import only the parts before it. A top-level module is a part
# of its own; a package (with its submodules) is one part.
LAYERS = [
    "version", "vocabulary", "errors", "atomic", "console", "cachedir", "confine", "documents",
    "data", "searching", "recipes", "spec",
    "models", "compress", "proxy", "evaluation", "reference", "limits", "scaffold",
    "engine", "report", "api", "service", "cli", "__main__", "__init__",
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """{module: the autocompress modules it imports}, relative imports resolved."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(prefix + ([base] if base else []))
                # a submodule named in the list is what is used; otherwise the module's names
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target.startswith("autocompress") and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_every_part_imports_only_parts_below_it():
    graph = _imports()
    rank = {part: i for i, part in enumerate(LAYERS)}
    unknown = {_part(m) for m in graph} - set(rank)
    assert not unknown, f"place these in LAYERS: {sorted(unknown)}"
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if _part(m) != _part(t) and rank[_part(t)] > rank[_part(m)])
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_part_imports_another_packages_private_modules():
    graph = _imports()
    private = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                     if _part(m) != _part(t) and any(p.startswith("_") and p != "__init__" for p in t.split(".")[1:]))
    assert not private, "\n".join(private)


def test_the_spec_the_search_logic_and_the_service_load_without_torch():
    """Validating a spec, the search logic and the HTTP service (which reads run stores) need no
    torch: the service starts in a fraction of a second."""
    import subprocess
    import sys

    code = ("import sys, autocompress.spec, autocompress.searching, autocompress.service; "
            "from autocompress.spec import validate_spec; "
            "print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_package_never_imports_torchvision_or_torchaudio():
    """Both are installed only because SpikingJelly 2.0.0 requires them. Neither loads with
    torch 2.13's CPU build (torchaudio's last release, 2.11, is built for torch 2.11), so the
    package must not import them, in any function."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("torchvision", "torchaudio")]
    assert not found, "\n".join(found)


def test_the_public_api_type_checks(tmp_path):
    """mypy on the public API's modules (pyproject.toml's [tool.mypy]: `import autocompress`,
    the engine's entry points, the spec, the model registry) finds no error."""
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")], cwd=REPO,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    assert f"Success: no issues found in {len(listed)} source files" in done.stdout
    assert "autocompress/api.py" in listed


def test_every_name_in_every_all_is_what_it_says():
    """With every module of the package imported, each name in each module's ``__all__``
    resolves, to no module (but the two SpikingJelly modules models._spikingjelly passes on),
    and each of the engine's lazy names to the object its source module defines. A lazy name
    loses to a submodule of the same name once that is imported: `from autocompress.engine
    import finetune` used to give the subpackage, not the function."""
    import importlib
    import pkgutil
    import types

    import autocompress
    from autocompress import engine

    names = ["autocompress"] + [m.name for m in pkgutil.walk_packages(autocompress.__path__, "autocompress.")
                                if not m.name.endswith("__main__")]  # __main__ runs the command line
    modules = {name: importlib.import_module(name) for name in names}
    for name, module in modules.items():
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr)  # AttributeError: a name __all__ promises and the module lacks
            passed_on = name == "autocompress.models._spikingjelly" and attr in ("functional", "neuron")
            assert passed_on or not isinstance(value, types.ModuleType), f"{name}.{attr} is a module"
    for attr, source in engine._SOURCES.items():
        assert getattr(engine, attr) is getattr(modules[f"autocompress.engine.{source}"], attr), attr


def test_import_autocompress_prints_nothing_and_changes_no_global_state():
    """`import autocompress` in a fresh interpreter: no output, no new logging handler or
    level, sys.path, the warning filters and torch's settings as they were (torch is not
    even imported)."""
    probe = (
        "import logging, sys, warnings\n"
        "before = (list(sys.path), logging.getLogger().handlers[:], logging.getLogger().level,\n"
        "          logging.getLogger('optuna').level, list(warnings.filters))\n"
        "import autocompress\n"
        "after = (list(sys.path), logging.getLogger().handlers[:], logging.getLogger().level,\n"
        "         logging.getLogger('optuna').level, list(warnings.filters))\n"
        "assert before == after, (before, after)\n"
        "assert 'torch' not in sys.modules, 'import autocompress imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "" and done.stderr == ""
