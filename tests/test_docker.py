"""docker/: what can be checked without Docker (it does not run on this machine)."""

from __future__ import annotations

import re
import shlex

import yaml

from autocompress.cli import cli
from conftest import REPO

DOCKER = REPO / "docker"
INSTALL = "pip install --no-cache-dir --constraint constraints.txt '.[cluster]'"


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", []) if opt.startswith("--")}


def test_dockerfile_copies_existing_files_and_installs_as_the_readme_says():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-cudnn-runtime", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert INSTALL in text
    assert INSTALL in (REPO / "docs" / "guide" / "cluster.md").read_text(), "the cluster guide must document the image's install command"
    assert 'ENTRYPOINT ["tini", "--", "autocompress"]' in text


def test_compose_file_parses_and_runs_real_commands():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"head", "worker"}
    for service in services.values():
        build = service["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
        assert any(v.endswith(":/data:ro") for v in service["volumes"]) and "runs:/runs" in service["volumes"]
    head = " ".join(services["head"]["command"])
    assert "ray start --head" in head
    serve_args = shlex.split(head.split("exec autocompress serve", 1)[1])
    given = {arg.split("=")[0] for arg in serve_args if arg.startswith("--")}
    assert given <= _options(cli.commands["serve"]), given - _options(cli.commands["serve"])
    assert {"--ray-dashboard", "--runs-dir", "--data-roots", "--host"} <= given
    assert "AUTOCOMPRESS_TOKEN" in services["head"]["environment"]
    worker = " ".join(services["worker"]["command"])
    assert "ray start --address=head:6379" in worker and "--block" in worker
    gpus = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["capabilities"] == ["gpu"] and gpus["count"] == 1
