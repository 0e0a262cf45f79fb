"""The service and the command line tried as an attacker and as a busy team would use
them: each case of issue 12 replayed against a real server on a loopback port (and the
CLI, and the run store), with an audit hook in the server and every job it starts that
logs any file opened outside the data roots."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from autocompress.cli import main
from autocompress.engine import RunStore
from autocompress.engine import RunOptions, resume_search, run_status, start_search
from autocompress.engine.store import DB_NAME
from autocompress.errors import DataError, SpecError, UserInputError
from autocompress.service.token import write_token_file
from autocompress.spec import validate_spec
from conftest import AUTH, HANG_GUARD, REPO, TOKEN, Server, make_spec_data, wait_for, write_spec

SECRET = "OUTSIDE-SECRET-7f3a"
INSIDE_SECRET = "INSIDE-SECRET-91c2"
PATH_FIELDS = ("model.checkpoint", "data.root", "data.calibration.root", "space.file")

AUDIT_HOOK = '''
import os, sys
_watch = os.environ.get("AUTOCOMPRESS_AUDIT_WATCH")
_log = os.environ.get("AUTOCOMPRESS_AUDIT_LOG")
if _watch and _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _busy = []

    def _hook(event, args):
        if _busy or event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        if not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        _busy.append(1)
        try:
            path = os.path.realpath(os.fsdecode(args[0]))
            if path == _watch or path.startswith(_watch + os.sep):
                os.write(_fd, f"{os.getpid()} {event} {path}\\n".encode())
        except Exception:
            pass
        finally:
            _busy.pop()

    sys.addaudithook(_hook)
'''


def tiny(**overrides) -> dict:
    return make_spec_data(**{"space.granularity": "network", "budget.max_full_evaluations": 4, **overrides})


def with_path(field: str, value) -> dict:
    """A tiny spec whose ``field`` holds ``value`` (image-folder data where the field needs it)."""
    data = tiny()
    if field in ("data.root", "data.calibration.root"):
        data["data"] = {"dataset": "imagefolder", "root": "images", "image_size": 16, "calibration": {"size": 2}}
        data["model"]["args"]["in_channels"] = 3
    node = data
    *parents, last = field.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with a small image folder and a few files, a folder outside it with
    secrets, and the audit hook that watches the outside folder."""
    base = tmp_path_factory.mktemp("world")
    outside, root, hook = base / "outside", base / "root", base / "hook"
    for folder in (outside, root, hook):
        folder.mkdir()
    (outside / "secret.yaml").write_text(f"password: {SECRET}\nfamily: [\n")
    (outside / "secret.pt").write_text(SECRET)
    (outside / "images").mkdir()
    (root / "escape.yaml").symlink_to(outside / "secret.yaml")
    (root / "escape-dir").symlink_to(outside / "images")
    (root / "broken-space.yaml").write_text(f"family: spikformer\nprune: {{rates: [0.5}}\n# {INSIDE_SECRET}\n")
    from PIL import Image

    for label in ("a", "b"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 80, 120)).save(root / "images" / label / f"{i}.png")
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = base / "audit.log"
    env = {"PYTHONPATH": str(hook), "AUTOCOMPRESS_AUDIT_WATCH": str(outside), "AUTOCOMPRESS_AUDIT_LOG": str(log)}
    return {"base": base, "outside": outside, "root": root, "log": log, "env": env}


@pytest.fixture(scope="module")
def hostile(world):
    """One real server for the request cases (no job is started by any of them, but
    the one that is meant to)."""
    runs = world["base"] / "runs"
    server = Server(runs, "--data-roots", str(world["root"]), "--max-workers", "2", env=world["env"])
    yield server
    server.stop()
    for job in runs.glob("*/job.json"):
        try:
            os.killpg(json.loads(job.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError, KeyError, TypeError):
            pass


def opened_outside(world) -> list[str]:
    return world["log"].read_text().splitlines() if world["log"].exists() else []


def refused(server: Server, body, *, loc: str | None = None, yaml_text: bool = False) -> dict:
    """POST a spec; it must get a 4xx naming ``loc``, and nothing secret may come back."""
    if yaml_text:
        answer = server.post("/v1/searches", content=body, headers={"content-type": "application/yaml"})
    else:
        answer = server.post("/v1/searches", content=body if isinstance(body, (bytes, str)) else json.dumps(body),
                             headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert SECRET not in answer.text and INSIDE_SECRET not in answer.text
    assert str(Path.home()) + "/" not in answer.text and str(server.runs) not in answer.text
    if loc is not None:
        assert loc in [d["loc"] for d in answer.json()["detail"]], answer.json()
    return answer.json()


def runs_made(server: Server) -> list[str]:
    return sorted(p.name for p in server.runs.iterdir() if p.is_dir())


# --------------------------------------------------------------------------- 1-3: paths


def test_paths_that_escape_the_roots_are_refused_and_nothing_outside_is_opened(hostile, world):
    outside, root = world["outside"], world["root"]
    before = runs_made(hostile)
    escapes = [
        "~/" + os.path.relpath(outside / "secret.yaml", Path.home()),  # '~' would expand past the check
        "~",
        str(outside / "secret.yaml"),
        os.path.relpath(outside / "secret.yaml", root),  # ../outside/...
        "escape.yaml",  # a symlink inside the root that leads out
        "escape-dir",
        "images/../../outside/secret.yaml",
        "/etc/passwd",
    ]
    for field in PATH_FIELDS:
        for value in escapes:
            refused(hostile, with_path(field, value), loc=field)
        refused(hostile, with_path(field, ["/etc/passwd"]), loc=field)  # not a string
        refused(hostile, with_path(field, 42), loc=field)
        refused(hostile, with_path(field, "images/\x00/x"))  # NUL: refused as a document
        refused(hostile, with_path(field, "a" * 300 + "/x"), loc=field)  # a component over 255 bytes
        refused(hostile, with_path(field, "x/" * 2100), loc=field)  # a path over 4096 bytes
        # !!binary used to pass the roots check (it skipped non-strings) and became a path
        encoded = base64.b64encode(str(outside / "secret.yaml").encode()).decode()
        text = yaml.safe_dump(with_path(field, "PLACEHOLDER")).replace("PLACEHOLDER", f"!!binary {encoded}")
        assert "!!binary" in text
        refused(hostile, text, yaml_text=True)
    # no oracle: a file that exists outside and one that does not are refused alike
    exists = refused(hostile, with_path("model.checkpoint", str(outside / "secret.pt")))["detail"][0]["msg"]
    missing = refused(hostile, with_path("model.checkpoint", str(outside / "nope.pt")))["detail"][0]["msg"]
    assert exists.replace("secret.pt", "nope.pt") == missing
    assert runs_made(hostile) == before, "a refused request created a run"
    assert opened_outside(world) == []


def test_resolving_a_path_never_looks_outside_the_roots(tmp_path, monkeypatch):
    from autocompress.confine import resolve_inside

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (root / "in").symlink_to(root / "images")
    (root / "relative-in").symlink_to("images")
    (root / "out").symlink_to(outside / "secret")
    (root / "relative-out").symlink_to("../outside/secret")
    (root / "loop").symlink_to(root / "loop")
    looked: list[str] = []
    real_lstat, real_readlink = os.lstat, os.readlink
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: looked.append(str(p)) or real_lstat(p, *a, **k))
    monkeypatch.setattr(os, "readlink", lambda p, *a, **k: looked.append(str(p)) or real_readlink(p, *a, **k))
    roots = [str(root)]
    r = str(root)
    assert resolve_inside(f"{r}/in/x.png", roots) == f"{r}/images/x.png"
    assert resolve_inside(f"{r}/relative-in/./x.png", roots) == f"{r}/images/x.png"
    assert resolve_inside(f"{r}/images/../images", roots) == f"{r}/images"
    assert resolve_inside(f"{r}/missing/../images", roots) == f"{r}/images"
    for escape in (f"{r}/out", f"{r}/relative-out", f"{r}/../outside/secret", str(outside / "secret"), "/etc/passwd",
                   f"{r}/loop", f"{r}/missing/../../outside/secret", f"{r}/in/../../outside"):
        assert resolve_inside(escape, roots) is None, escape
    monkeypatch.undo()
    assert looked and all(p == r or p.startswith(r + os.sep) for p in looked), looked


def test_accepted_paths_are_stored_resolved_inside_the_roots(hostile, world):
    answer = hostile.post("/v1/searches", json={**with_path("data.root", "images"), "budget": {
        "max_full_evaluations": 1}})
    assert answer.status_code == 201, answer.text
    search_id = answer.json()["id"]
    hostile.delete(f"/v1/searches/{search_id}")  # not needed to run
    request = json.loads((hostile.runs / search_id / "request.json").read_text())
    assert request["data"]["root"] == os.path.realpath(world["root"] / "images")


# --------------------------------------------------------------------------- 2: job errors carry no file text


def test_a_failed_job_is_summarised_without_file_text_or_server_paths(hostile, world):
    answer = hostile.post("/v1/searches", json=with_path("space.file", "broken-space.yaml"))
    assert answer.status_code == 201, answer.text
    search_id = answer.json()["id"]
    status = hostile.wait(search_id, ("failed", "done"))
    assert status["state"] == "failed"
    text = json.dumps(status)
    assert INSIDE_SECRET not in text and "log_tail" not in status and str(hostile.runs) not in text
    assert status["error"].startswith("the job refused its input") or "spec" in status["error"]
    log = (hostile.runs / search_id / "job.log").read_text()
    assert "broken-space.yaml" in log  # the operator still sees the whole story
    assert opened_outside(world) == []


# --------------------------------------------------------------------------- 4, 7, 9: documents


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def test_documents_that_would_exhaust_the_server_are_refused(hostile):
    bomb = alias_bomb()
    assert len(bomb) < 1024
    detail = refused(hostile, bomb, yaml_text=True)["detail"][0]["msg"]
    assert "once its aliases are expanded" in detail  # refused by counting, never expanded
    assert hostile.get("/healthz").status_code == 200
    refused(hostile, "a: &a [*a]\n", yaml_text=True)  # recursive
    refused(hostile, "[" * 1000 + "]" * 1000)  # JSON nested 1,000 deep in 2 KB
    refused(hostile, "name: " + "[" * 500 + "]" * 500, yaml_text=True)
    refused(hostile, "name: " + "{a: " * 500 + "}" * 500, yaml_text=True)
    refused(hostile, '{"name": ' + "9" * 4400 + "}")  # past Python's int-string limit
    refused(hostile, "name: " + "9" * 4400, yaml_text=True)
    refused(hostile, '{"name": "x", "constraints": {"accuracy": {"max_drop": Infinity}}}')
    refused(hostile, "a: 1\na: 2\n", yaml_text=True)  # duplicate keys
    refused(hostile, '{"a": 1, "a": 2}')
    refused(hostile, "? [a, b]\n: 1\n", yaml_text=True)  # a key that is not a string
    refused(hostile, "a: &x {b: 1}\nc:\n  <<: *x\n", yaml_text=True)  # merge keys
    refused(hostile, "name: !!python/object/apply:os.system ['id']\n", yaml_text=True)
    refused(hostile, b"\xff\xfe\x00")  # not UTF-8
    assert hostile.post("/v1/searches", content=b"<spec/>", headers={"content-type": "text/xml"}).status_code == 415
    assert hostile.post("/v1/searches", content=b"x" * 300_000,
                        headers={"content-type": "application/json"}).status_code == 413


def test_the_command_line_refuses_the_same_documents(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert main(["validate", str(bomb)]) == 2
    assert "once its aliases are expanded" in capsys.readouterr().err
    spec = write_spec(tmp_path, tiny())
    assert main(["validate", str(spec), "--set", f"name={alias_bomb().replace(chr(10), ' ')}"]) == 2
    assert main(["validate", str(spec), "--set", "data.root=" + "[" * 200 + "]" * 200]) == 2
    assert main(["validate", str(spec), "--set", "execution.workers=10000"]) == 2
    assert "execution.workers: 10,000 is above the limit of 64" in capsys.readouterr().err
    assert main(["validate", str(spec), "--set", "execution.workers=100", "--limit", "execution.workers=128"]) == 0


# --------------------------------------------------------------------------- 5, 10, 15: sizes


def test_a_local_ray_is_sized_to_the_machine(tmp_path, capsys):
    spec = write_spec(tmp_path, tiny())
    too_many = (os.cpu_count() or 1) + 1
    assert main(["search", str(spec), "--run-dir", str(tmp_path / "run"), "--workers", str(too_many)]) == 2
    assert f"{too_many} workers need {too_many} CPUs, but this machine has" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before a run directory was made


@pytest.mark.parametrize(("field", "value"), [
    ("data.workers", 100_000),
    ("model.args.T", 1_000_000),
    ("model.args.embed_dims", 65_536),
    ("model.args.depths", 1000),
    ("model.args.image_size", 65_536),
    ("data.batch_size", 10**12),
    ("data.calibration.size", 10**9),
    ("space.prune_rates", [i / 20_000 for i in range(10_000)]),
    ("execution.workers", 10_000),
    ("budget.max_full_evaluations", 10**9),
    ("budget.max_hours", 10**6),
    ("constraints.accuracy.max_drop", 150),
    ("strategy", {"name": "beam", "beam_width": 10**6}),
    ("strategy", {"name": "greedy", "seed": 2**70}),
])
def test_sizes_a_spec_controls_are_capped(hostile, field, value):
    data = tiny(**{field: value})
    if field == "model.args.image_size":
        data["data"]["image_size"] = value
    loc = field if field != "strategy" else f"strategy.{'beam_width' if value['name'] == 'beam' else 'seed'}"
    refused(hostile, data, loc=loc)


def test_the_parameter_count_is_capped_before_anything_is_built(hostile):
    data = tiny(**{"model.args.embed_dims": 4096, "model.args.depths": 64, "model.args.num_heads": 8})
    detail = refused(hostile, data, loc="model")["detail"][0]["msg"]
    assert "parameters" in detail and "above the limit of 1,000,000,000" in detail


# --------------------------------------------------------------------------- 8: token, ids, listing, factories


@pytest.mark.slow
def test_weak_tokens_and_tampered_token_files_stop_the_service(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_TOKEN"}

    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autocompress", "serve", "--runs-dir", str(tmp_path / "runs"),
                               "--port", "1", *args], capture_output=True, text=True, env=env, timeout=HANG_GUARD)

    weak = serve("--host", "0.0.0.0", "--token", "hunter2")
    assert weak.returncode == 2 and "too weak" in weak.stderr
    (tmp_path / "runs").mkdir()
    token_file = tmp_path / "runs" / "service-token"
    token_file.write_text("old\n")
    token_file.chmod(0o644)
    wide = serve()
    assert wide.returncode == 2 and "mode 644" in wide.stderr and token_file.read_text() == "old\n"
    token_file.unlink()
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    token_file.symlink_to(target)
    linked = serve()
    assert linked.returncode == 2 and "symbolic link" in linked.stderr and target.read_text() == "keep me\n"

    fresh = tmp_path / "fresh-token"
    write_token_file(fresh, "t" * 40)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text() == "t" * 40 + "\n"
    write_token_file(fresh, "u" * 40)  # a file of ours with mode 600 is replaced
    assert fresh.read_text() == "u" * 40 + "\n"


def test_ids_must_match_whole_and_unknown_things_are_404(hostile):
    answer = hostile.post("/v1/searches", json=tiny(**{"strategy": {"name": "random", "seed": 0}}))
    search_id = answer.json()["id"]
    for path in (f"/v1/searches/{search_id}%0A", f"/v1/searches/{search_id}%00", "/v1/searches/..%2F..%2Fetc",
                 f"/v1/searches/{search_id}/points/abcdef%0A/model", f"/v1/searches/{search_id}/points/zzz/model"):
        assert hostile.get(path).status_code == 404, path
    assert hostile.get(f"/v1/searches/{search_id}/points/abcdef123456/model").status_code == 404
    assert not (hostile.runs / search_id / "exports").exists(), "a GET made a folder"
    assert hostile.get("/v1/searches?limit=0").status_code == 422
    assert hostile.get("/v1/searches?limit=nope").status_code == 422
    assert httpx.get(hostile.url + f"/v1/searches/{search_id}", headers={"Authorization": "Bearer x"}).status_code == 401
    hostile.delete(f"/v1/searches/{search_id}")


@pytest.mark.slow
def test_only_the_exact_allowed_factory_is_accepted(servers):
    server = servers("--allow-factory", "models:qkformer_digits", "--data-roots", str(REPO / "experiments" / "qkformer"))
    spec = yaml.safe_load((REPO / "experiments" / "qkformer" / "spec.yaml").read_text())
    spec.pop("output", None)
    for factory in ("models:other_function", "subprocess:getoutput", "models", "models:qkformer_digits\n"):
        answer = server.post("/v1/searches", json={**spec, "model": {**spec["model"], "factory": factory}})
        assert answer.status_code == 422, answer.text
        assert "model.factory" in [d["loc"] for d in answer.json()["detail"]]
    accepted = server.post("/v1/searches", json=spec)
    assert accepted.status_code == 201, accepted.text
    server.delete(f"/v1/searches/{accepted.json()['id']}")
    bad = subprocess.run([sys.executable, "-m", "autocompress", "serve", "--allow-factory", "models", "--runs-dir",
                          str(server.runs.parent / "other")], capture_output=True, text=True, timeout=HANG_GUARD)
    assert bad.returncode == 2 and "module:function" in bad.stderr


def test_listing_is_paginated_and_opens_only_the_page(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from autocompress.service import ServiceConfig, create_app
    from autocompress.service.jobs import CANCELLED, REQUEST, SUBMITTED

    runs = tmp_path / "runs"
    for i in range(30):  # searches a client cancelled before they started
        run_dir = runs / f"s{i:02d}-20260101-000000-abcdef"
        run_dir.mkdir(parents=True)
        (run_dir / REQUEST).write_text(json.dumps({"name": f"s{i:02d}"}))
        (run_dir / SUBMITTED).write_text(json.dumps({"submitted_at": 1000.0 + i}))
        (run_dir / CANCELLED).write_text("x")
        (run_dir / DB_NAME).write_bytes(b"")  # listed states would have to open it
    opened = []
    real = RunStore.open_reader.__func__

    def counting(cls, run_dir):
        opened.append(run_dir)
        return real(cls, run_dir)

    monkeypatch.setattr(RunStore, "open_reader", classmethod(counting))
    with TestClient(create_app(ServiceConfig(runs_dir=runs, token=TOKEN))) as client:
        assert client.app.state.jobs.warmed.wait(HANG_GUARD)  # at start each store is read once, beside the loop
        assert len(opened) == 30
        seen, after = [], None
        while True:
            page = client.get("/v1/searches", params={"limit": 7, **({"after": after} if after else {})},
                              headers=AUTH).json()
            assert len(page["searches"]) <= 7
            seen += [s["id"] for s in page["searches"]]
            after = page["next"]
            if after is None:
                break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 30
    assert len(opened) == 30  # settled: the five pages answered from memory, no store opened again


# --------------------------------------------------------------------------- 6: the scheduler across restarts


def drivers_alive(runs: Path) -> set[str]:
    """Run directories with a live driver (`autocompress search|resume`); a child the
    driver forks shows its command line until it execs, so run directories are counted."""
    found: dict[int, tuple[int, str]] = {}
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        command = process.info["cmdline"] or []
        if "autocompress" in command and any(c in ("search", "resume") for c in command):
            run = next((c for c in command if c.startswith(str(runs) + os.sep)), None)
            if run is not None:
                found[process.info["pid"]] = (process.info["ppid"], Path(run).relative_to(runs).parts[0])
    return {run for ppid, run in found.values() if ppid not in found}


@pytest.mark.slow
def test_searches_beyond_two_slots_queue_and_survive_a_sigkill_restart(servers, tmp_path):
    """Every search, a queued resume too, ends done exactly once; never more than two
    drivers alive; a cancelled search keeps its run and resumes. Jobs are held at their
    first full evaluation (fault injection) so which are running and which queued at the
    restart does not depend on speed."""
    runs = tmp_path / "runs"
    env = {"AUTOCOMPRESS_FAULT_INJECT": "wait-on-full:1"}
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(drivers_alive(runs)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first = servers("--max-concurrent", "2", env=env)
    body = tiny(**{"name": "r", "budget.max_full_evaluations": 2})
    r = first.post("/v1/searches", json=body).json()["id"]
    waiting = lambda search_id: (runs / search_id / "fault-waiting").exists()  # noqa: E731
    wait_for(lambda: waiting(r))
    assert first.get(f"/v1/searches/{r}").json()["state"] == "running"
    assert first.delete(f"/v1/searches/{r}").status_code == 200
    first.wait(r, ("cancelled",), timeout=HANG_GUARD)
    wait_for(lambda: first.get(f"/v1/searches/{r}").json()["job"].get("exit_code") is not None, timeout=HANG_GUARD)
    assert first.get(f"/v1/searches/{r}").json()["job"]["exit_code"] == 130  # stopped cleanly (SIGTERM)
    with RunStore.open_reader(runs / r) as store:  # the run directory stays, for a resume
        assert store.sessions()[-1]["state"] == "interrupted"
    assert first.delete(f"/v1/searches/{r}").status_code == 409  # nothing left to cancel
    (runs / r / "fault-waiting").unlink()

    ids = [first.post("/v1/searches", json=tiny(**{"name": f"s{i}", "budget.max_full_evaluations": 2})).json()["id"]
           for i in range(3)]
    wait_for(lambda: sum(waiting(i) for i in ids) == 2)
    resumed = first.post(f"/v1/searches/{r}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "queued"
    listed = first.get("/v1/searches").json()["searches"]
    assert [s["id"] for s in listed] == [*reversed(ids), r]  # newest first
    states = {s["id"]: s["state"] for s in listed}
    assert sorted(states.values()).count("running") == 2 and sorted(states.values()).count("queued") == 2
    queued = [i for i in ids if states[i] == "queued"]
    assert len(queued) == 1 and first.get(f"/v1/searches/{queued[0]}/pareto").status_code == 409  # no store yet
    first.kill()
    assert (runs / r / "queue.json").is_file()  # the queued resume is on disk

    second = servers("--max-concurrent", "2", env=env)
    states = {s["id"]: s["state"] for s in second.get("/v1/searches").json()["searches"]}
    assert list(states.values()).count("running") == 2 and states[r] == "queued"  # adopted, and still queued
    for search_id in [r, *ids]:
        (runs / search_id / "fault-release").write_text("go")
    for search_id in [r, *ids]:
        assert second.wait(search_id, ("done", "failed", "interrupted"), timeout=HANG_GUARD)["state"] == "done"
    stop.set()
    watcher.join()
    assert 1 <= peak[0] <= 2
    intervals, jobs = [], []
    for search_id in [r, *ids]:
        with RunStore.open_reader(runs / search_id) as store:
            sessions = store.sessions()
            fulls = [x.result.candidate_id for x in store.records(("full",))]
        assert [s["state"] for s in sessions] == (["interrupted", "done"] if search_id == r else ["done"])
        assert len(fulls) == len(set(fulls))
        intervals += [(s["started_at"], s["ended_at"]) for s in sessions]
        job = json.loads((runs / search_id / "job.json").read_text())
        assert job["exit_code"] == 0  # the real exit, also of the jobs that outlived the first service
        jobs.append((job["started_at"], json.loads((runs / search_id / "exit.json").read_text())["ended_at"]))
    assert most_at_once(intervals) <= 2 and most_at_once(jobs) <= 2  # driver sessions; whole jobs
    # output.report: false (make_spec_data's): no report.html at the end, so the service has none to give
    assert not (runs / r / "report.html").exists() and second.get(f"/v1/searches/{r}/report").status_code == 404
    server = psutil.Process(second.process.pid)  # every supervisor it started is reaped
    wait_for(lambda: all(child.status() != psutil.STATUS_ZOMBIE for child in server.children()), timeout=HANG_GUARD)


class FakeLauncher:
    """Jobs that live until the test ends them: the scheduler's rules without processes."""

    name = "fake"

    def __init__(self):
        self.alive_jobs: set[str] = set()
        self.started: list[str] = []
        self.stopped: list[str] = []

    def start(self, run_dir, argv, ticket):
        self.alive_jobs.add(ticket)
        self.started.append(argv[0])
        return None, {"launcher": self.name}

    def alive(self, run_dir, job):
        return job.get("ticket") in self.alive_jobs

    def exit_code(self, run_dir, job):
        return 130

    def stop(self, run_dir, job):
        self.stopped.append(job["ticket"])  # asked to stop; it exits when the test says so


class RefusingLauncher(FakeLauncher):
    """A cluster whose job agent is not up yet: it refuses ``refusals`` submissions first."""

    def __init__(self, refusals: int):
        super().__init__()
        self.refusals = refusals

    def start(self, run_dir, argv, ticket):
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("Request failed with status code 500: No available agent to submit job, please "
                               "try again later..")
        return super().start(run_dir, argv, ticket)

    @staticmethod
    def transient(error):
        from autocompress.service.jobs import RayJobsLauncher

        return RayJobsLauncher.transient(error)


def test_a_cluster_that_cannot_take_a_job_yet_is_tried_again_and_the_search_stays_queued(tmp_path):
    """A Ray head that has just started refuses submissions until its job agent is up: the
    search stays queued and is submitted again (the service used to fail it); a refusal that
    lasts past LAUNCH_PATIENCE, or any other error, fails it."""
    from autocompress.service.jobs import JOB, LAUNCH_PATIENCE, JobManager

    launcher = RefusingLauncher(refusals=2)
    jobs = JobManager(tmp_path / "runs", launcher=launcher)
    search_id = jobs.submit(tiny(), "tiny")
    jobs.tick()
    assert jobs.status(search_id)["state"] == "queued" and not (jobs.runs_dir / search_id / JOB).exists()
    jobs.tick()  # too soon: not tried again
    assert launcher.refusals == 1
    jobs.queue[0].next_try = 0.0
    jobs.tick()
    assert launcher.refusals == 0 and jobs.status(search_id)["state"] == "queued"
    jobs.queue[0].next_try = 0.0
    jobs.tick()
    assert launcher.started == ["search"] and jobs.status(search_id)["state"] == "running"

    late = RefusingLauncher(refusals=5)
    jobs = JobManager(tmp_path / "late", launcher=late)
    search_id = jobs.submit(tiny(), "tiny")
    jobs.tick()
    jobs.queue[0].first_refused -= LAUNCH_PATIENCE + 1
    jobs.queue[0].next_try = 0.0
    jobs.tick()
    assert not jobs.queue and jobs.status(search_id)["state"] == "failed"


def test_a_resume_never_starts_beside_a_job_or_a_driver_still_alive(tmp_path):
    from autocompress.service.jobs import JOB, Conflict, JobManager

    launcher = FakeLauncher()
    jobs = JobManager(tmp_path / "runs", max_concurrent=2, launcher=launcher)
    search_id = jobs.submit(tiny(), "tiny")
    jobs.tick()
    assert launcher.started == ["search"] and jobs.status(search_id)["state"] == "running"
    jobs.cancel(search_id)
    assert launcher.stopped and jobs.status(search_id)["state"] == "running"  # it is stopping
    with pytest.raises(Conflict):  # used to start a second process while the first was exiting
        jobs.resume(search_id)
    launcher.alive_jobs.clear()  # the job exits
    jobs.tick()
    assert jobs.status(search_id)["state"] == "cancelled"
    run_dir = jobs.runs_dir / search_id
    assert json.loads((run_dir / JOB).read_text())["exit_code"] == 130  # its end is recorded

    # a driver started by hand (the CLI) in the same directory holds the queued resume back
    (run_dir / "driver.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                     "process_started": psutil.Process().create_time()}))
    assert jobs.resume(search_id)["state"] == "queued"
    for _ in range(3):
        jobs.tick()
    assert launcher.started == ["search"] and jobs.status(search_id)["state"] == "queued"
    (run_dir / "driver.json").unlink()
    jobs.tick()
    assert launcher.started == ["search", "search"]  # no store was made yet: the resume starts the search


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    alive = most = 0
    for _, step in events:
        alive += step
        most = max(most, alive)
    return most


# --------------------------------------------------------------------------- 11-14: the run store


def test_a_store_killed_while_being_created_leaves_no_run(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"

    real_replace = os.replace

    def killed(source, target, *args, **kwargs):
        if str(source).endswith(".store-creating.sqlite"):
            raise KeyboardInterrupt  # the process dies between committing the schema and the rename
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        RunStore.create(run_dir, {"spec": {"name": "x"}})
    monkeypatch.undo()
    assert not (run_dir / DB_NAME).exists() and (run_dir / ".store-creating.sqlite").exists()
    assert main(["resume", str(run_dir)]) == 2
    assert "not an autocompress run directory" in capsys.readouterr().err
    with RunStore.create(run_dir, {"spec": {"name": "x"}}) as store:  # a new search there works
        assert store.meta("spec")["name"] == "x"
    assert not (run_dir / ".store-creating.sqlite").exists()


@pytest.mark.slow
def test_a_store_deleted_mid_run_stops_the_driver_and_keeps_its_results(tmp_path):
    spec = write_spec(tmp_path, tiny(**{"budget.max_full_evaluations": 6, "strategy": {"name": "random", "seed": 0}}))
    run_dir = tmp_path / "run"
    env = {**os.environ, "AUTOCOMPRESS_FAULT_INJECT": "wait-on-full:3"}  # held at its third full evaluation
    process = subprocess.Popen([sys.executable, "-m", "autocompress", "search", str(spec), "--run-dir", str(run_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    wait_for(lambda: (run_dir / "fault-waiting").exists() or process.poll() is not None)
    (run_dir / DB_NAME).unlink()
    (run_dir / "fault-release").write_text("go")
    out, err = process.communicate(timeout=HANG_GUARD)
    assert process.returncode == 2, err
    assert f"{run_dir / DB_NAME} was deleted or replaced" in err
    recovered = list(run_dir.glob("store.sqlite.recovered-*"))
    assert len(recovered) == 1
    with sqlite3.connect(recovered[0]) as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations WHERE kind = 'full'").fetchone()[0] >= 2
    assert not (run_dir / "pareto.json").exists()  # nothing claims the run is done


@pytest.mark.slow
def test_a_read_only_run_can_be_inspected(tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a reader as another user")
    spec = validate_spec(tiny(**{"budget.max_full_evaluations": 2}), base_dir=tmp_path)
    public = Path(tempfile.mkdtemp(prefix="autocompress-ro-"))
    try:
        public.chmod(0o755)
        run_dir = public / "run"
        start_search(spec, run_dir=run_dir, say=lambda _m: None)
        for path in [run_dir, *run_dir.iterdir()]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        for command in ("status", "pareto"):
            done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                   sys.executable, "-m", "autocompress", command, str(run_dir)],
                                  capture_output=True, text=True, timeout=HANG_GUARD, cwd="/")
            assert done.returncode == 0, done.stderr
            assert "done" in done.stdout
    finally:
        shutil.rmtree(public, ignore_errors=True)


@pytest.mark.slow
def test_readers_never_block_a_starting_driver_and_a_refusal_names_the_live_holder(tmp_path):
    spec = validate_spec(tiny(**{"budget.max_full_evaluations": 2}), base_dir=tmp_path)
    run_dir = tmp_path / "run"
    start_search(spec, run_dir=run_dir, say=lambda _m: None)
    stop, errors = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                run_status(run_dir)
            except Exception as error:  # pragma: no cover - the assertion below reports it
                errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(50):
            RunStore.open_writer(run_dir).close()  # used to be refused while a reader held the lock
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from autocompress.engine.store import RunStore
        store = RunStore.open_writer({str(run_dir)!r})
        print("holding", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(UserInputError, match=f"in use by another autocompress driver .*pid {holder.pid} "):
            RunStore.open_writer(run_dir)
        with RunStore.open_reader(run_dir) as store:
            assert store.driver_alive()
    finally:
        holder.kill()
        holder.wait()
    with RunStore.open_reader(run_dir) as store:  # killed: the same pid is no longer a driver
        assert not store.driver_alive()


def test_wall_time_counts_every_session_and_an_interrupted_run_has_nothing_in_flight(tmp_path):
    spec = validate_spec(tiny(**{"budget.max_full_evaluations": 2}), base_dir=tmp_path)
    run_dir = tmp_path / "run"
    start_search(spec, run_dir=run_dir, say=lambda _m: None)
    with sqlite3.connect(run_dir / DB_NAME) as db:  # as if killed before its first heartbeat, 1,000 s in
        db.execute("UPDATE sessions SET started_at = started_at - 1000, ended_at = NULL, state = 'running', "
                   "progress = ?", (json.dumps({"in_flight": 1}),))
    status = run_status(run_dir)
    assert status["state"] == "interrupted" and status["progress"]["in_flight"] == 0
    document = resume_search(run_dir, options=RunOptions(max_full_evaluations=3), say=lambda _m: None)
    assert document["statistics"]["wall_seconds"] >= 1000


def test_the_heartbeat_goes_on_while_the_driver_is_busy(tmp_path):
    with RunStore.create(tmp_path / "run", {"spec": {"name": "x"}}) as store:
        store.begin_session("search", workers=0, executor="in-process", max_full_evaluations=1)
        first = store.sessions()[-1]["updated_at"]
        store.start_heartbeat(interval=0.05)
        wait_for(lambda: store.sessions()[-1]["updated_at"] > first, timeout=HANG_GUARD)  # the main thread did nothing
        store.stop_heartbeat()


# --------------------------------------------------------------------------- 15: data sanity


def test_data_that_does_not_fit_the_model_is_refused_before_the_first_batch(tmp_path, world):
    from autocompress.engine import Session
    from autocompress.engine.space_file import build_space

    images = tmp_path / "images"
    shutil.copytree(world["root"] / "images", images)
    (images / "0-empty").mkdir()  # sorts first: would shift every label
    with_empty = validate_spec(with_path("data.root", str(images)), base_dir=tmp_path)
    with pytest.raises(DataError, match="1 class folder .* holds no images: 0-empty"):
        Session.open(with_empty, say=lambda _m: None)
    (images / "0-empty").rmdir()
    two_classes = validate_spec(with_path("data.root", str(images)), base_dir=tmp_path)  # the model has 10
    with pytest.raises(DataError, match="2 classes in the data .* but the model has 10 outputs"):
        Session.open(two_classes, say=lambda _m: None)
    grey = with_path("data.root", str(images))
    grey["model"]["args"]["in_channels"] = 1
    with pytest.raises(SpecError, match="in_channels is 1, but data.transform normalises 3-channel images"):
        validate_spec(grey, base_dir=tmp_path)  # a grayscale model on these images needs a 1-value mean/std
    for drop in (150, float("inf")):
        with pytest.raises(SpecError, match="max_drop"):
            validate_spec(tiny(**{"constraints.accuracy.max_drop": drop}), base_dir=tmp_path)
    baseline_only = validate_spec(tiny(**{"space.prune_rates": [0.0], "space.bits": [32]}), base_dir=tmp_path)
    session = Session.open(baseline_only, say=lambda _m: None)
    from autocompress.compress import find_channel_groups, quantizable_layers

    groups = find_channel_groups(session.model, example=session.data.calibration[:8])
    with pytest.raises(UserInputError, match="nothing but the baseline"):
        build_space(baseline_only, groups, quantizable_layers(session.model.net))


# --------------------------------------------------------------------------- the dashboard's static side


def test_the_dashboard_is_static_and_every_response_forbids_inline_script(tmp_path):
    """/ and /dashboard/ serve the page's files without a token (they hold no run data);
    nothing outside the dashboard folder is reachable through them; every response, the
    API's included, carries a policy with no inline script; the page's own files use no
    inline script, handler attribute, style attribute or innerHTML, so the policy costs them
    nothing."""
    import re

    from fastapi.testclient import TestClient

    from autocompress.report.style import REPORT_STYLE, report_style_source
    from autocompress.service import ServiceConfig, create_app
    from autocompress.service.app import DASHBOARD

    with TestClient(create_app(ServiceConfig(runs_dir=tmp_path / "runs", token=TOKEN))) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'" and directives["default-src"] == "'none'"
        assert "unsafe" not in policy and directives["frame-ancestors"] == "'none'"
        assert directives["style-src"] == f"'self' {report_style_source()}"
        for name in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.LICENSE",
                     "examples/index.json", "examples/digits-demo.yaml"):
            answer = client.get(f"/dashboard/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["x-content-type-options"] == "nosniff"
        for escape in ("/dashboard/../app.py", "/dashboard/%2e%2e/app.py", "/dashboard/..%2fapp.py",
                       "/dashboard/vendor/../../jobs.py", "/dashboard//etc/passwd"):
            answer = client.get(escape)
            assert answer.status_code == 404, escape
            assert b"import" not in answer.content and b"root:" not in answer.content
        api = client.get("/v1/searches")  # no token: refused, with the same headers
        assert api.status_code == 401 and api.headers["content-security-policy"] == policy
        assert client.get("/v1/searches", headers=AUTH).headers["content-security-policy"] == policy
    html = (DASHBOARD / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/dashboard/vendor/uPlot.iife.min.js" defer>',
                                                     '<script src="/dashboard/dashboard.js" defer>']
    assert re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S) == ["", ""]  # no inline script
    for text in (html, (DASHBOARD / "dashboard.js").read_text()):
        assert not re.search(r"\son[a-z]+\s*=", text) and "style=" not in text
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
    # the report's inline sheet is the one the policy's hash allows
    import autocompress.report.build as build

    assert build.REPORT_STYLE is REPORT_STYLE and "<style>{REPORT_STYLE}</style>" in Path(build.__file__).read_text()


def test_a_settled_search_is_read_once_until_one_of_its_files_changes(tmp_path, monkeypatch):
    """The list of many finished searches (the dashboard polls it) answers a settled search
    from memory; a change to any file its status comes from reads it again."""
    from autocompress.service.jobs import CANCELLED, JOB, REQUEST, SUBMITTED, JobManager

    runs = tmp_path / "runs"
    run_dir = runs / "s-1"
    run_dir.mkdir(parents=True)
    (run_dir / REQUEST).write_text(json.dumps({"name": "s"}))
    (run_dir / SUBMITTED).write_text(json.dumps({"submitted_at": 1000.0}))
    (run_dir / CANCELLED).write_text("x")
    jobs = JobManager(runs)
    jobs.start()
    try:
        reads = []
        real = JobManager._read_status

        def counted(self, search_id):
            reads.append(search_id)
            return real(self, search_id)

        monkeypatch.setattr(JobManager, "_read_status", counted)
        first = jobs.status("s-1")
        assert first["state"] == "cancelled" and len(reads) == 1
        first["name"] = "changed by a caller"  # a copy: the memory is not the caller's
        assert jobs.status("s-1")["name"] == "s" and len(reads) == 1
        (run_dir / JOB).write_text(json.dumps({"ticket": "t", "command": "search", "exit_code": 1,
                                               "started_at": 1.0, "ended_at": 2.0}))
        assert jobs.status("s-1")["job"]["exit_code"] == 1 and len(reads) == 2
        (run_dir / CANCELLED).unlink()
        assert jobs.status("s-1")["state"] == "failed" and len(reads) == 3
    finally:
        jobs.shutdown()
