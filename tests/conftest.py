from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Seconds before a wait gives up: only a hung process or server reaches it. No test checks speed
# (a 600 s limit on the demo search failed on a loaded machine); CI's own limit is 90 minutes.
HANG_GUARD = 1800
DEMO_SPEC = REPO / "experiments" / "digits" / "spec.yaml"

TINY_SPIKFORMER = {
    "T": 2, "in_channels": 1, "image_size": 16, "patch_size": 4, "num_classes": 10,
    "embed_dims": 16, "num_heads": 2, "mlp_ratio": 2.0, "depths": 1,
}
TINY_SDT = {
    "T": 2, "in_channels": 1, "image_size": 16, "num_classes": 10,
    "embed_dims": 16, "num_heads": 2, "mlp_ratio": 2.0, "depths": 1, "pooling_stat": "0011",
}
TINY_OFFICIAL_SPIKFORMER = {k: v for k, v in TINY_SPIKFORMER.items() if k != "patch_size"}
# spikformer: SpikingJelly's Spikformer under its old name; spikformer_cifar: the official CIFAR network
TINY_ARGS = {"spikformer": TINY_SPIKFORMER, "spikformer_cifar": TINY_OFFICIAL_SPIKFORMER,
             "spike_driven_transformer": TINY_SDT}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Reference models and caches go to a temporary folder, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory):
    """A cache holding the trained digits reference model (trained once per test run)."""
    from autocompress.reference.train import ensure_reference

    cache = tmp_path_factory.mktemp("reference-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOCOMPRESS_CACHE", str(cache))
        ensure_reference("digits-spikformer", progress=False, say=lambda _m: None)
    return cache


@pytest.fixture
def demo_spec_data() -> dict:
    return yaml.safe_load(DEMO_SPEC.read_text())


def make_spec_data(family: str = "spikformer", **overrides) -> dict:
    """A small valid spec (digits, tiny model, no checkpoint) as a mapping."""
    data = {
        "name": "tiny",
        "model": {"family": family, "args": copy.deepcopy(TINY_ARGS[family])},
        "data": {"dataset": "digits", "image_size": 16, "validation": {"limit": 40}, "calibration": {"size": 8}},
        "constraints": {"accuracy": {"max_drop": 1.5}, "memory": {"min_saving": 0.5}},
        "execution": {"device": "cpu"},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the HTTP service, for real

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, runs: Path, *args: str, env: dict | None = None):
        self.runs = runs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(runs.parent / f"server-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autocompress", "serve", "--port", str(self.port), "--runs-dir", str(runs), *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "AUTOCOMPRESS_TOKEN": TOKEN,
                                                                       **(env or {})})
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (runs.parent / f"server-{self.port}.log").read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up")

    def get(self, path: str, **kw):
        return httpx.get(self.url + path, headers=AUTH, timeout=HANG_GUARD, **kw)

    def post(self, path: str, **kw):
        headers = {**AUTH, **kw.pop("headers", {})}
        return httpx.post(self.url + path, headers=headers, timeout=HANG_GUARD, **kw)

    def delete(self, path: str):
        return httpx.delete(self.url + path, headers=AUTH, timeout=HANG_GUARD)

    def wait(self, search_id: str, states: tuple[str, ...], timeout: float = HANG_GUARD) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/v1/searches/{search_id}").json()
            if status["state"] in states:
                return status
            time.sleep(0.3)
        raise AssertionError(f"{search_id} never reached {states}: {status}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=HANG_GUARD)
        self.log.close()

    def kill(self) -> None:
        """SIGKILL: the service dies at once; its jobs, in sessions of their own, go on."""
        self.process.kill()
        self.process.wait(timeout=HANG_GUARD)
        self.log.close()


@pytest.fixture
def servers(tmp_path):
    started: list[Server] = []

    def start(*args: str, **kw) -> Server:
        server = Server(tmp_path / "runs", *args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for job in (tmp_path / "runs").glob("*/job.json"):  # jobs outlive the server by design: end them
        pid = json.loads(job.read_text()).get("pid")
        try:
            os.killpg(pid, signal.SIGKILL)  # the supervisor leads its session: it and its driver
        except (ProcessLookupError, PermissionError, TypeError):
            pass
