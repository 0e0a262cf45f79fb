"""Shared by the benchmark scripts: the machine they ran on, and RESULTS.md sections.

Each script owns one section of RESULTS.md, between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``, and rewrites it (with the command that reproduces it and the
machine) every time it runs with ``--write``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

from autocompress.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DIGITS_SPEC = Path(__file__).resolve().parents[1] / "digits" / "spec.yaml"
FMNIST_SPEC = Path(__file__).resolve().parents[1] / "fashion_mnist" / "joint.yaml"
# --data NAME -> the spec a benchmark starts from, and how its RESULTS.md section and title are marked
DATA = {"digits": (DIGITS_SPEC, "", ""), "fashion_mnist": (FMNIST_SPEC, "-fashion_mnist", " (Fashion-MNIST)")}


def data_argument(parser) -> None:
    """``--data digits|fashion_mnist``: the reference model and data set a benchmark runs on."""
    parser.add_argument("--data", choices=sorted(DATA), default="digits",
                        help="digits (the embedded demo) or fashion_mnist (the shipped reference, half held out)")


def bench_spec(data: str):
    """The validated spec of ``--data``."""
    from autocompress.spec import load_spec

    return load_spec(DATA[data][0])


def section(name: str, title: str, data: str) -> tuple[str, str, str]:
    """(section name, title, re-run command) of a benchmark on ``--data``."""
    _, suffix, label = DATA[data]
    flag = "" if data == "digits" else f" --data {data}"
    return name + suffix, title + label, f"python experiments/bench/{name}.py{flag} --write"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return (f"{cpu}, {os.cpu_count()} CPU cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({threads} thread{'' if threads == 1 else 's'}); {time.strftime('%Y-%m-%d')}")


def claim(path: Path) -> bool:
    """Take the run ``path`` names for this process, unless a live process holds it."""
    while True:
        try:
            with open(path, "x") as handle:
                handle.write(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                holder = int(path.read_text() or 0)
                os.kill(holder, 0)
                return False  # alive: its run
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # left by a process that died: take it over
            except PermissionError:
                return False


class Keep:
    """``--keep DIR``: each finished run's JSON figures saved in DIR and reused by the next
    invocation, so a long benchmark survives a kill and invocations sharing DIR share its runs
    (each takes the runs no live invocation holds). Without a folder every run is computed."""

    def __init__(self, folder: Path | None, data: str):
        self.folder, self.data = folder, data
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, compute, *, mine: bool = True):
        """``compute()``'s figures, from the folder when an earlier invocation saved them; None
        when the run is not ``mine`` (``--only`` leaves it to another invocation) or another
        live invocation runs it now."""
        path = self.folder / f"{self.data}-{key}.json" if self.folder is not None else None
        if path is not None and path.exists():
            return json.loads(path.read_text())
        if not mine or (path is not None and not claim(path.with_suffix(".claim"))):
            return None
        figures = compute()
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(figures)))
            path.with_suffix(".claim").unlink(missing_ok=True)
        return figures


def budget_arguments(doc: str, budget: int = 40, tables: tuple[str, ...] = (), only: tuple[str, ...] = (),
                     keep: bool = False):
    """The arguments of a benchmark of searches at one budget: ``--budget``, ``--write``,
    ``--keep`` (:class:`Keep`) when the script keeps its runs (others refuse the flag rather
    than ignore it), ``--data``, ``--tables`` (a comma-separated subset of ``tables``) when it has several and
    ``--only`` (a subset of ``only``, its setups) when it has several."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--budget", type=int, default=budget, help="full evaluations per search")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    if keep:
        parser.add_argument("--keep", type=Path, default=None, help="folder keeping each finished run's figures: a "
                            "later invocation (say with another --only) reuses them, and the table shows them")
    data_argument(parser)
    for flag, names in (("--tables", tables), ("--only", only)):
        if names:
            parser.add_argument(flag, type=_subset_of(names), default=list(names),
                                help=f"comma-separated, among {','.join(names)} (default: all)")
    return parser.parse_args()


def _subset_of(names: tuple[str, ...]):
    """An argparse type: a comma-separated, non-empty subset of ``names``."""
    import argparse

    def subset(text: str) -> list[str]:
        chosen = [t.strip() for t in text.split(",") if t.strip()]
        if not chosen or set(chosen) - set(names):
            raise argparse.ArgumentTypeError(f"choose among {', '.join(names)} (got {text!r})")
        return chosen
    return subset


def publish(name: str, title: str, command: str, body: str, *, write: bool) -> None:
    """Print a benchmark's result; with ``write``, also rewrite its RESULTS.md section."""
    print(body)
    if write:
        write_section(name, title, command, body)


def write_section(name: str, title: str, command: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = (f"<!-- bench:{name} -->\n## {title}\n\nRe-run: `{command}`  \nMachine: {machine()}\n\n"
             f"{body.strip()}\n<!-- /bench:{name} -->")
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:  # a new section on another data set goes right after the digits one, side by side
        base = next((f"<!-- /bench:{name[:-len(suffix)]} -->" for _, suffix, _ in DATA.values()
                     if suffix and name.endswith(suffix)), None)
        at = text.find(base) if base else -1
        if at >= 0:
            at += len(base)
            text = text[:at] + "\n\n" + block + text[at:]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


@dataclass
class SearchRun:
    """A search run through the driver every search takes (``start_search``), read back from its store."""

    document: dict  # pareto.json
    fulls: list  # Result of each full evaluation, in order
    at: list  # seconds from the start of the run to each of them
    pareto: object  # autocompress.searching.ParetoSet
    constraints: object = None  # autocompress.searching.Constraints
    probe_at: list = None  # seconds from the start of the run to each probe

    @property
    def best(self):
        return self.pareto.best

    def held_out(self, candidate_id: str) -> dict | None:
        """The held-out measurement of a Pareto point (None without a held-out split)."""
        for point in self.document["points"]:
            if point["id"] == candidate_id:
                return point.get("holdout")
        return None

    def baseline_line(self) -> str:
        """The baseline in words: accuracy and bytes, and the held-out split when there is one."""
        base, held = self.document["baseline"], self.document.get("holdout")
        text = f"baseline {base['accuracy']:.2f} % top-1, {base['memory_bytes']:,} bytes"
        if held:
            text += (f" (on the selection split; held out: {held['images']:,} images, baseline "
                     f"{held['baseline_accuracy']:.2f} % there)")
        return text

    @property
    def full_evaluations(self) -> int:
        return self.document["statistics"]["full_evaluations"]

    @property
    def probes(self) -> int:
        return self.document["statistics"]["proxy_evaluations"]

    def reach(self, memory_bytes: int) -> tuple[int | None, float | None]:
        """(full evaluations, seconds) until a feasible point of at most ``memory_bytes``."""
        for count, (result, seconds) in enumerate(zip(self.fulls, self.at), start=1):
            if result.feasible and result.memory_bytes <= memory_bytes:
                return count, seconds
        return None, None


def overridden(spec, overrides: dict | None) -> dict:
    """``spec`` (a validated Spec) as a mapping, with dotted-key ``overrides`` applied."""
    data = spec.model_dump(mode="json")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def run_search(spec, overrides: dict | None = None) -> SearchRun:
    """Run ``spec`` (a validated Spec) with dotted-key ``overrides`` in a temporary run directory."""
    import tempfile

    from autocompress.engine import RunStore, start_search
    from autocompress.searching import pareto_set
    from autocompress.spec import validate_spec

    data = overridden(spec, overrides)
    with tempfile.TemporaryDirectory(prefix="autocompress-bench-") as folder:
        data["output"]["run_dir"] = str(Path(folder) / "run")
        document = start_search(validate_spec(data, base_dir=DIGITS_SPEC.parent), say=lambda _m: None)
        with RunStore.open_reader(Path(folder) / "run") as store:
            started = store.sessions()[0]["started_at"]
            records = store.records(("full",))
            probes = store.records(("probe",))
            constraints = store.constraints()
            pareto = pareto_set([r.result for r in records], constraints)
    return SearchRun(document, [r.result for r in records], [r.finished_at - started for r in records], pareto,
                     constraints, [r.finished_at - started for r in probes])
