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


def _ray_start_flags(command: str) -> set[str]:
    words = shlex.split(command)
    at = next(i for i in range(len(words) - 1) if words[i:i + 2] == ["ray", "start"])
    flags = set()
    for word in words[at + 2:]:
        if word in ("&&", ";"):
            break
        if word.startswith("--"):
            flags.add(word.split("=")[0])
    return flags


def test_the_compose_commands_use_flags_ray_has_and_the_ports_agree():
    """What a `docker compose up` would run, checked against the real programs without
    Docker: each `ray start` flag exists in the installed Ray, the service's dashboard URL
    and the workers' head address use the ports the head opens (and the image exposes),
    and the health check asks an endpoint the service serves without a token."""
    from ray.scripts.scripts import start

    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    head, worker = " ".join(services["head"]["command"]), " ".join(services["worker"]["command"])
    ray_flags = {opt for param in start.params for opt in param.opts if opt.startswith("--")}
    for command in (head, worker):
        assert _ray_start_flags(command) <= ray_flags, _ray_start_flags(command) - ray_flags
    port = re.search(r"ray start --head\b.*?--port=(\d+)", head).group(1)
    assert f"--address=head:{port}" in worker
    dashboard = re.search(r"--ray-dashboard (\S+)", head).group(1)
    assert dashboard.endswith(":8265")  # Ray's dashboard port, as the head starts it (no --dashboard-port)
    assert "--dashboard-port" not in head and "--dashboard-host=0.0.0.0" in head
    exposed = set(re.search(r"^EXPOSE (.+)$", (DOCKER / "Dockerfile").read_text(), re.M).group(1).split())
    assert {port, "8265", "8000"} <= exposed
    probe = " ".join(services["head"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in probe and "--port 8000" in head
    assert '@app.get("/healthz")' in (REPO / "autocompress" / "service" / "app.py").read_text()


def test_the_image_python_meets_the_project_and_its_cuda_is_the_one_torch_is_built_for():
    """The base image's Ubuntu gives the image its Python (python3 from apt): it must be one
    the project supports; the image's CUDA major version must be the one PyPI's torch
    wheels are built against (CUDA 12: nvidia-*-cu12 dependencies)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    text = (DOCKER / "Dockerfile").read_text()
    cuda, ubuntu = re.search(r"^FROM nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu(\d+\.\d+)$", text, re.M).groups()
    python = {"22.04": "3.10", "24.04": "3.12"}[ubuntu]  # Ubuntu's python3
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python in SpecifierSet(requires), (python, requires)
    assert cuda == "12"
    assert "python3-venv" in text and "python3 -m venv /opt/venv" in text  # pip installs into a venv (PEP 668)
