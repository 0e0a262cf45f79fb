"""Searches as jobs: each one an ``autocompress search`` / ``resume`` process in its own
run directory, at most ``max_concurrent`` at once, the rest queued.

The service keeps no state of its own. A search's run directory holds everything:

- ``request.json``: the accepted spec (paths absolute, ``output.run_dir`` set) and
  when it was submitted;
- ``job.json``: the last job started for it (command, local pid or Ray job id, start,
  end and exit status when the service saw it end);
- ``job.log``: the job's output (local jobs);
- ``cancelled``: present after ``DELETE`` (removed by a resume);
- the run store the driver writes (``store.sqlite``), which says whether the search
  is running (its driver holds the lock), done, interrupted or failed.

On start the service lists the run directories again and re-queues the searches that
never started. A job that was running when the service stopped goes on (local jobs
run in their own session); if it died meanwhile, its run shows as interrupted and can
be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autocompress._atomic import atomic_write
from autocompress.engine.pareto_file import run_state
from autocompress.engine.store import RunStore, is_run_dir

log = logging.getLogger("autocompress.service")

REQUEST, JOB, LOG, CANCELLED = "request.json", "job.json", "job.log", "cancelled"
Command = Literal["search", "resume"]
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- launchers


@dataclass
class Handle:
    search_id: str
    command: Command
    process: subprocess.Popen | None = None  # local
    ray_job: str | None = None  # Ray Jobs


class LocalLauncher:
    """Runs a job as a child process in its own session (it outlives a service restart)."""

    name = "local"

    def start(self, run_dir: Path, argv: list[str], search_id: str, command: Command) -> tuple[Handle, dict]:
        log_file = open(run_dir / LOG, "ab")
        log_file.write(f"\n$ autocompress {' '.join(argv)}\n".encode())
        log_file.flush()
        process = subprocess.Popen([sys.executable, "-m", "autocompress", *argv], stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log_file.close()
        return Handle(search_id, command, process=process), {"launcher": self.name, "pid": process.pid}

    def poll(self, handle: Handle) -> int | None:
        return handle.process.poll()

    def stop(self, handle: Handle | None, job: dict) -> None:
        pid = handle.process.pid if handle and handle.process else job.get("pid")
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)  # the driver stops cleanly: exit 130, finished work kept

    def log_tail(self, run_dir: Path, job: dict) -> str:
        return _tail(run_dir / LOG)

    def alive(self, job: dict) -> bool:
        return _pid_alive(job.get("pid"))


class RayJobsLauncher:
    """Submits each job to a Ray cluster with Ray's job submission client. The run
    directories must be on storage the cluster's nodes share."""

    name = "ray"

    def __init__(self, address: str):
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(address)

    def start(self, run_dir: Path, argv: list[str], search_id: str, command: Command) -> tuple[Handle, dict]:
        job_id = f"autocompress-{search_id}-{command}-{secrets.token_hex(3)}"
        self.client.submit_job(entrypoint="autocompress " + shlex.join(argv), submission_id=job_id)
        return Handle(search_id, command, ray_job=job_id), {"launcher": self.name, "ray_job": job_id}

    def poll(self, handle: Handle) -> int | None:
        status = str(self.client.get_job_status(handle.ray_job)).rsplit(".", 1)[-1].upper()
        return {"SUCCEEDED": 0, "STOPPED": 130, "FAILED": 3}.get(status)

    def stop(self, handle: Handle | None, job: dict) -> None:
        if job.get("ray_job"):
            self.client.stop_job(job["ray_job"])

    def log_tail(self, run_dir: Path, job: dict) -> str:
        try:
            return "\n".join(self.client.get_job_logs(job["ray_job"]).splitlines()[-40:])
        except Exception as error:  # the cluster may have forgotten the job
            return f"(no log from Ray: {error})"

    def alive(self, job: dict) -> bool:
        return self.poll(Handle("", "search", ray_job=job["ray_job"])) is None if job.get("ray_job") else False


# --------------------------------------------------------------------------- the manager


class JobManager:
    def __init__(self, runs_dir: Path, *, max_concurrent: int = 1, launcher=None, poll_seconds: float = 0.5):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_concurrent = max_concurrent
        self.launcher = launcher or LocalLauncher()
        self.poll_seconds = poll_seconds
        self.queue: deque[tuple[str, Command]] = deque()
        self.running: dict[str, Handle] = {}
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for run_dir in sorted(self.runs_dir.iterdir(), key=lambda p: p.name):
            if (run_dir / REQUEST).is_file() and not (run_dir / JOB).exists() and not (run_dir / CANCELLED).exists():
                self.queue.append((run_dir.name, "search"))  # accepted, never started: queue it again
        self._thread = threading.Thread(target=self._loop, name="autocompress-jobs", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep scheduling whatever one job did
                log.exception("job scheduler")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        with self.lock:
            for search_id, handle in list(self.running.items()):
                code = self.launcher.poll(handle)
                if code is not None:
                    del self.running[search_id]
                    path = self.runs_dir / search_id / JOB
                    job = _read_json(path) or {}
                    _write_json(path, {**job, "ended_at": time.time(), "exit_code": code})
            while self.queue and len(self.running) < self.max_concurrent:
                search_id, command = self.queue.popleft()
                self._launch(search_id, command)

    def _launch(self, search_id: str, command: Command) -> None:
        run_dir = self.runs_dir / search_id
        argv = (["search", str(run_dir / REQUEST), "--run-dir", str(run_dir)] if command == "search"
                else ["resume", str(run_dir)])
        try:
            handle, job = self.launcher.start(run_dir, argv, search_id, command)
        except Exception as error:
            _write_json(run_dir / JOB, {"command": command, "started_at": time.time(), "ended_at": time.time(),
                                        "exit_code": 3, "error": f"could not start the job: {error}"})
            return
        self.running[search_id] = handle
        _write_json(run_dir / JOB, {"command": command, "started_at": time.time(), **job})

    # ------------------------------------------------------------------ requests

    def new_id(self, name: str) -> str:
        return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def submit(self, spec_data: dict, name: str) -> str:
        with self.lock:
            search_id = self.new_id(name)
            run_dir = self.runs_dir / search_id
            run_dir.mkdir()
            spec_data = {**spec_data, "output": {**spec_data.get("output", {}), "run_dir": str(run_dir)}}
            # request.json is the spec the job runs (a JSON spec file), plus when it came
            _write_json(run_dir / REQUEST, spec_data)
            _write_json(run_dir / "submitted.json", {"id": search_id, "submitted_at": time.time()})
            self.queue.append((search_id, "search"))
        return search_id

    def resume(self, search_id: str) -> dict:
        with self.lock:
            status = self.status(search_id)
            if status["state"] in ("queued", "running"):
                raise Conflict(f"search {search_id} is {status['state']}; nothing to resume")
            if not is_run_dir(self.runs_dir / search_id):
                command: Command = "search"  # cancelled before it started: start it
            else:
                command = "resume"
            (self.runs_dir / search_id / CANCELLED).unlink(missing_ok=True)
            self.queue.append((search_id, command))
        return self.status(search_id)

    def cancel(self, search_id: str) -> dict:
        with self.lock:
            status = self.status(search_id)
            if status["state"] not in ("queued", "running"):
                raise Conflict(f"search {search_id} is {status['state']}; only queued or running searches can be "
                               "cancelled")
            run_dir = self.runs_dir / search_id
            (run_dir / CANCELLED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self.queue = deque(item for item in self.queue if item[0] != search_id)
            self.launcher.stop(self.running.get(search_id), _read_json(run_dir / JOB) or {})
        return self.status(search_id)

    # ------------------------------------------------------------------ state, from the run directory

    def exists(self, search_id: str) -> bool:
        return bool(ID_PATTERN.match(search_id)) and (self.runs_dir / search_id / REQUEST).is_file()

    def ids(self) -> list[str]:
        found = [p.name for p in self.runs_dir.iterdir() if (p / REQUEST).is_file()]
        return sorted(found, key=lambda i: (_read_json(self.runs_dir / i / "submitted.json") or {}).get(
            "submitted_at", 0), reverse=True)

    def status(self, search_id: str) -> dict:
        run_dir = self.runs_dir / search_id
        submitted = _read_json(run_dir / "submitted.json") or {}
        job = _read_json(run_dir / JOB) or {}
        request = _read_json(run_dir / REQUEST) or {}
        with self.lock:
            queued = any(item[0] == search_id for item in self.queue)
            ours = search_id in self.running
        out = {"id": search_id, "name": request.get("name"), "submitted_at": submitted.get("submitted_at"),
               "strategy": (request.get("strategy") or {}).get("name"), "job": job or None, "progress": None,
               "best": None, "error": None}
        store_state = None
        if is_run_dir(run_dir):
            try:
                with RunStore.open_reader(run_dir) as store:
                    store_state = run_state(store)
                    sessions = store.sessions()
                    if sessions:
                        out["progress"] = sessions[-1]["progress"]
                        out["best"] = sessions[-1]["progress"].get("best")
                        if store_state == "failed":
                            out["error"] = sessions[-1]["stopped_by"]
            except Exception as error:  # a store being created, or damaged
                out["error"] = f"run store unreadable: {error}"
        finishing = store_state in ("done", "failed") and (
            ours or (job and job.get("exit_code") is None and self.launcher.alive(job)))
        if finishing:
            store_state = "running"  # the driver ended its session; the job still writes pareto.json and the report
        if (run_dir / CANCELLED).exists() and not queued:
            state = "running" if store_state == "running" else "cancelled"  # running: it is stopping
        elif queued:
            state = "queued"
        elif store_state in ("running", "done", "failed"):
            state = store_state
        elif ours or (job and job.get("exit_code") is None and self.launcher.alive(job)):
            state = "running"  # started; its store is not written yet
        elif store_state == "interrupted":
            state = "interrupted"
        elif job.get("exit_code") not in (None, 0, 130) or (job and store_state is None):
            state = "failed"
            out["error"] = out["error"] or job.get("error") or f"the job exited with status {job.get('exit_code')}"
        elif store_state == "starting":
            state = "interrupted"
        else:
            state = "queued"
        out["state"] = state
        if state == "failed" and job:
            out["log_tail"] = self.launcher.log_tail(run_dir, job)
        return out


class Conflict(Exception):
    pass
