"""Shared by the benchmark scripts: the machine they ran on, and RESULTS.md sections.

Each script owns one section of RESULTS.md, between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->``, and rewrites it (with the command that reproduces it and the
machine) every time it runs with ``--write``.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DIGITS_SPEC = Path(__file__).resolve().parents[1] / "digits" / "spec.yaml"


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
    return (f"{cpu}, {os.cpu_count()} CPU cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); {time.strftime('%Y-%m-%d')}")


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
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
