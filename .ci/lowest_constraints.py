"""Print a pip constraints file that pins every dependency pyproject.toml declares (the
test extra included) at the lowest version it allows: the input of .ci/lowest."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# torch is the one exception: its lowest allowed release exists here only as a CUDA build
# (several GB); the job keeps constraints.txt's torch, the CPU build on this machine's disk.
KEPT = {"torch"}


def lowest(requirements: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement.split(";")[0])
        name, specifier = match.group(1).lower().replace("_", "-"), match.group(3)
        floor = re.search(r"(?:>=|==)\s*([0-9][0-9A-Za-z.]*)", specifier)
        if name in KEPT or floor is None:
            continue
        if name in pins and pins[name] != floor.group(1):  # two floors for one package: the higher
            pins[name] = max(pins[name], floor.group(1), key=lambda v: tuple(int(p) for p in re.findall(r"\d+", v)))
        else:
            pins[name] = floor.group(1)
    return pins


def main() -> None:
    project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    for name, version in sorted(lowest(requirements).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
