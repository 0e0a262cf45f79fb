from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
# Seconds before a wait gives up: only a hung process or server reaches it. No test checks speed;
# below pytest's per-test timeout (600 s, pyproject.toml) so that a wait fails with its own message.
HANG_GUARD = 480
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
# compress_model's operators alone, as the tests of the operators call it: no MSE clipping, no BatchNorm
# folding or recalibration, and (PLAIN) L2 importance; its defaults are the spec's compensation
NO_COMPENSATION = {"clip": False, "fold": None, "recalibrate": None}
PLAIN = {"importance": "l2", **NO_COMPENSATION}
TINY_ARGS = {"spikformer": TINY_SPIKFORMER, "spikformer_cifar": TINY_OFFICIAL_SPIKFORMER,
             "spike_driven_transformer": TINY_SDT}


if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: each worker process (and what it starts) gets one core
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # trained weights: tests/make_fixtures.py writes them


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Reference models and caches go to a temporary folder, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory):
    """A cache holding the trained digits reference model, as `autocompress train-reference`
    leaves it (the trained weights come from tests/fixtures: training takes 100 s)."""
    cache = tmp_path_factory.mktemp("reference-cache")
    shutil.copytree(FIXTURES / "references", cache / "references")
    return cache


def tiny_trained_model(family: str, *, load: bool = True):
    """A tiny SViT (32-dim, 2 blocks) of ``family``, with the weights it has after 6 epochs on
    digits (neurons fire as in use); ``load=False``: untrained, for tests/make_fixtures.py."""
    from autocompress.models import create_model, load_checkpoint
    from autocompress.spec import validate_spec

    torch.manual_seed(0)
    data = make_spec_data(family, **{"model.args.depths": 2, "model.args.embed_dims": 32})
    model = create_model(validate_spec(data, base_dir=FIXTURES).model)
    if load:
        load_checkpoint(model.net, FIXTURES / "tiny" / f"{family}.pt")
    return model.eval()


@pytest.fixture
def cli(capsys):
    """``autocompress ARGS`` run in this process: its exit code and output, as from a subprocess
    (tests that need a process of its own, for signals or a fresh import, start one)."""
    from autocompress.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


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
        # no report.html at the end of a search (1.5 s each): the tests of the report ask for it
        "output": {"report": False},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def wait_for(condition, timeout: float = HANG_GUARD) -> None:
    """Poll ``condition`` until it holds (the timeout only catches a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


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


PROCESS_FIXTURES = {"servers", "hostile"}  # they start the HTTP service (tests/test_cluster.py: Ray clusters)


def pytest_collection_modifyitems(config, items):
    """Tests that start processes of their own are `slow` (`-m "not slow"` leaves them out of the
    edit-test loop). The slow tests run first: with `-n 2` the long runs start at once and the many
    short tests fill the gaps, instead of one worker finishing a long test alone at the end."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
