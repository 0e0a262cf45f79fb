"""Searches as jobs: each one an ``autocompress search`` / ``resume`` process in its own
run directory, at most ``max_concurrent`` alive at once, the rest queued.

The service keeps no state of its own. A search's run directory holds everything:

- ``request.json``: the accepted spec (paths resolved, ``output.run_dir`` set);
  ``submitted.json``: its id and when it came;
- ``queue.json``: present while a search or a resume waits for a slot (so a restart
  keeps the queue, in order);
- ``job.json``: the last job started (its ticket, command, launcher, supervisor pid and
  that process's start time, or the Ray job id), with its exit status once seen;
- ``job.lock``: held by the local job's supervisor for its whole life (see
  autocompress.service.supervisor), ``exit.json``: the real exit status it recorded,
  ``error.json``: the kind of error the job exited with, ``job.log``: its output;
- ``cancelled``: present after ``DELETE`` (removed by a resume);
- the run store the driver writes (``store.sqlite``; ``driver.json`` names a live driver).

A job is alive while its lock is held (or its Ray job runs) or while a driver runs in
its run directory. Only alive jobs count against the limit, and a new job never starts
in a directory where one is alive: after a restart the service adopts the jobs that
still run, counts them, and records their real exit when they end.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from autocompress.atomic import atomic_write_json
from autocompress.engine import RunStore, identity_alive, is_run_dir, process_started, read_driver, session_progress
from autocompress.engine.liveness import DRIVER_NAME
from autocompress.engine.store import DB_NAME
from autocompress.engine.pareto_file import run_best
from autocompress.engine.status import finetune_status
from autocompress.errors import ERROR_FILE_ENV, UserInputError
from autocompress.searching import StopReason
from autocompress.service.supervisor import ERROR_NAME, EXIT_NAME

log = logging.getLogger("autocompress.service")

REQUEST, SUBMITTED, QUEUE, JOB, LOCK, CANCELLED = (
    "request.json", "submitted.json", "queue.json", "job.json", "job.lock", "cancelled")
SERVICE_LOCK = "service.lock"
Command = Literal["search", "resume", "finetune"]
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")

# What a client learns of a failed job: a fixed sentence per kind of error, never the
# job's own message (which may quote files); the job's log stays on the server.
ERROR_SUMMARIES = {
    "SpecError": "the spec was refused when the job started (a file it names may have changed)",
    "CheckpointError": "the checkpoint could not be loaded (not a state-dict file, or it does not fit the model)",
    "DataError": "the data set could not be used (its layout, classes or images)",
    "ModelError": "the model could not be built from the spec",
    "StoreError": "the run store could not be used (damaged, deleted or replaced)",
    "UserInputError": "the job refused its input",
    "AutocompressError": "the search failed",
}
LAUNCH_PATIENCE = 600.0  # seconds a job may wait for a cluster that cannot take it yet (its job agent starting)
UNEXPECTED = "the job failed unexpectedly"
SEE_LOG = "; the service's operator finds the details in the job log of the run directory"


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data, indent=2)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_held(path: Path) -> bool:
    """Whether another open file holds the flock on ``path`` (tried and released at once;
    only the service takes this lock, and only before it starts a job)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


# --------------------------------------------------------------------------- launchers


class LocalLauncher:
    """A job is a supervisor process in its own session (it outlives a service restart)
    holding the run directory's ``job.lock``."""

    name = "local"

    def start(self, run_dir: Path, argv: list[str], ticket: str) -> tuple[subprocess.Popen | None, dict]:
        """Start a job; return the child process to reap (None when there is none here)
        and what job.json records of it."""
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the caller checked it is free
            env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_TOKEN"}  # jobs never see the token
            process = subprocess.Popen(
                [sys.executable, "-m", "autocompress.service.supervisor", "--run-dir", str(run_dir), "--ticket",
                 ticket, "--lock-fd", str(fd), "--", *argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, pass_fds=(fd,), env=env, cwd=run_dir)
        finally:
            os.close(fd)  # the supervisor holds the lock through its inherited descriptor
        return process, {"launcher": self.name, "pid": process.pid, "process_started": process_started(process.pid)}

    def alive(self, run_dir: Path, job: dict) -> bool:
        return lock_held(run_dir / LOCK)

    def exit_code(self, run_dir: Path, job: dict) -> int | None:
        ended = _read_json(run_dir / EXIT_NAME)
        return ended.get("exit_code") if ended.get("ticket") == job.get("ticket") else None

    def stop(self, run_dir: Path, job: dict) -> None:
        pid = job.get("pid")
        if pid and self.alive(run_dir, job) and identity_alive(
                {"pid": pid, "host": socket.gethostname(), "process_started": job.get("process_started")}):
            os.kill(pid, signal.SIGTERM)  # the supervisor forwards it: the driver stops cleanly, exit 130


class RayJobsLauncher:
    """Submits each job to a Ray cluster with Ray's job submission client. The run
    directories must be on storage the cluster's nodes share."""

    name = "ray"

    def __init__(self, address: str):
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(address)

    def start(self, run_dir: Path, argv: list[str], ticket: str) -> tuple[subprocess.Popen | None, dict]:
        job_id = f"autocompress-{run_dir.name}-{ticket}"
        self.client.submit_job(entrypoint="autocompress " + shlex.join(argv), submission_id=job_id,
                               runtime_env={"env_vars": {ERROR_FILE_ENV: str(run_dir / ERROR_NAME)}})
        return None, {"launcher": self.name, "ray_job": job_id}

    def _status(self, job: dict) -> str | None:
        if not job.get("ray_job"):
            return None
        try:
            return str(self.client.get_job_status(job["ray_job"])).rsplit(".", 1)[-1].upper()
        except Exception as error:  # the cluster may have forgotten the job, or be unreachable
            log.warning("Ray job %s: %s", job["ray_job"], error)
            return None

    def alive(self, run_dir: Path, job: dict) -> bool:
        return self._status(job) in ("PENDING", "RUNNING")

    def exit_code(self, run_dir: Path, job: dict) -> int | None:
        return {"SUCCEEDED": 0, "STOPPED": 130, "FAILED": 3}.get(self._status(job) or "")

    def stop(self, run_dir: Path, job: dict) -> None:
        if job.get("ray_job"):
            self.client.stop_job(job["ray_job"])

    @staticmethod
    def transient(error: Exception) -> bool:
        """A submission the cluster refused for now: its job agent is not up yet (a head
        that has just started says "No available agent to submit job, please try again
        later"), or it cannot be reached for the moment."""
        return "try again later" in str(error) or isinstance(error, ConnectionError)


# --------------------------------------------------------------------------- the manager


@dataclass(order=True)
class Queued:
    queued_at: float
    search_id: str = field(compare=False)
    command: Command = field(compare=False)
    ticket: str = field(compare=False)
    args: tuple[str, ...] = field(default=(), compare=False)  # finetune: --point and --set options
    first_refused: float | None = field(default=None, compare=False)  # the launcher's first transient refusal
    next_try: float = field(default=0.0, compare=False)


class JobManager:
    def __init__(self, runs_dir: Path, *, max_concurrent: int = 1, launcher=None, poll_seconds: float = 0.5,
                 job_options: list[str] | None = None, search_options: list[str] | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_concurrent = max_concurrent
        self.launcher = launcher or LocalLauncher()
        self.poll_seconds = poll_seconds
        self.job_options = list(job_options or [])  # for every job (--data-roots)
        self.search_options = list(search_options or [])  # for a new search (--limit: a resume keeps its spec)
        self.queue: list[Queued] = []
        self.running: set[str] = set()  # searches whose job is alive (adopted ones included)
        self.children: list[subprocess.Popen] = []  # supervisors we started, reaped when they end
        self.submitted: dict[str, float] = {}  # search id -> submitted_at, newest first when sorted
        self._settled: dict[str, tuple[tuple, dict]] = {}  # search id -> (its files' key, its status), see status()
        self.warmed = threading.Event()  # set once warm() has read every search known at start
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._service_lock: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take the runs folder, then adopt what still runs and rebuild the queue."""
        self.claim()
        with self.lock:
            for run_dir in self.runs_dir.iterdir():
                if not (run_dir / REQUEST).is_file() or not ID_PATTERN.fullmatch(run_dir.name):
                    continue
                self.submitted[run_dir.name] = _read_json(run_dir / SUBMITTED).get("submitted_at", 0.0)
                job = _read_json(run_dir / JOB)
                queued = _read_json(run_dir / QUEUE)
                if not queued and not job and not (run_dir / CANCELLED).exists():
                    queued = {"command": "search", "ticket": secrets.token_hex(4),  # accepted by an older version
                              "queued_at": self.submitted[run_dir.name]}
                if queued and job.get("ticket") == queued.get("ticket") and (
                        job.get("pid") or job.get("ray_job") or self._alive(run_dir, job)):
                    (run_dir / QUEUE).unlink(missing_ok=True)  # launched before the restart
                    queued = {}
                if job.get("ticket") and job.get("ended_at") is None:  # its end was not seen yet
                    if self._alive(run_dir, job):
                        self.running.add(run_dir.name)
                        log.info("adopted the running job of %s", run_dir.name)
                    else:
                        self._record_end(run_dir, job)
                if queued.get("command") in ("search", "resume", "finetune"):
                    self.queue.append(Queued(float(queued.get("queued_at", 0.0)), run_dir.name, queued["command"],
                                             str(queued.get("ticket", "")), tuple(queued.get("args") or ())))
            self.queue.sort()
        self._thread = threading.Thread(target=self._loop, name="autocompress-jobs", daemon=True)
        self._thread.start()

    def claim(self) -> None:
        """Hold the runs folder's service lock (a second service on it is refused)."""
        if self._service_lock is not None:
            return
        fd = os.open(self.runs_dir / SERVICE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserInputError(f"--runs-dir {self.runs_dir} is served by another autocompress service; stop it "
                                 "or give this one another runs folder") from None
        self._service_lock = fd

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._service_lock is not None:
            os.close(self._service_lock)
            self._service_lock = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep scheduling whatever one job did
                log.exception("job scheduler")
            self._stop.wait(self.poll_seconds)

    def _alive(self, run_dir: Path, job: dict) -> bool:
        """A job or a driver runs in ``run_dir`` now."""
        if job and self.launcher.alive(run_dir, job):
            return True
        driver = read_driver(run_dir)
        if driver is None:
            return False
        if driver.get("host") == socket.gethostname():
            return identity_alive(driver)
        try:  # a driver on another node (a Ray Job): its heartbeat in the store says
            with RunStore.open_reader(run_dir) as store:
                return store.driver_alive()
        except UserInputError:  # no store yet
            return identity_alive(driver, heartbeat_at=driver.get("since"))

    def _record_end(self, run_dir: Path, job: dict) -> None:
        code = self.launcher.exit_code(run_dir, job)
        ended = {"ended_at": time.time(), "exit_code": code}
        if code is None:
            ended["lost"] = True  # its supervisor was killed too: the exit status is unknown
        _write_json(run_dir / JOB, {**job, **ended})

    def tick(self) -> None:
        with self.lock:
            self.children = [child for child in self.children if child.poll() is None]  # reap
            for search_id in list(self.running):
                run_dir = self.runs_dir / search_id
                job = _read_json(run_dir / JOB)
                if not self._alive(run_dir, job):
                    self.running.discard(search_id)
                    self._record_end(run_dir, job)
            waiting = []
            for item in self.queue:
                run_dir = self.runs_dir / item.search_id
                if (len(self.running) >= self.max_concurrent or time.time() < item.next_try
                        or self._alive(run_dir, _read_json(run_dir / JOB))):
                    waiting.append(item)  # no slot, its previous job is still ending, or the cluster said wait
                elif not self._launch(item):
                    waiting.append(item)
            self.queue = waiting

    def _launch(self, item: Queued) -> bool:
        """Start ``item``'s job; False when the launcher refused it for now (it stays queued)."""
        run_dir = self.runs_dir / item.search_id
        command = "resume" if is_run_dir(run_dir) else "search"  # a search that got as far as its store resumes
        if item.command == "finetune":
            command = "finetune"
        argv = ([command, str(run_dir / REQUEST), "--run-dir", str(run_dir), *self.search_options]
                if command == "search" else [command, str(run_dir), *item.args]) + self.job_options
        job = {"ticket": item.ticket, "command": command, "started_at": time.time()}
        before = _read_json(run_dir / JOB)  # an earlier job's (a resume's): kept while this one waits
        _write_json(run_dir / JOB, job)  # before the start: a restart then knows this ticket was launched
        try:
            process, started = self.launcher.start(run_dir, argv, item.ticket)
        except Exception as error:
            now = time.time()
            transient = getattr(self.launcher, "transient", None)
            if transient is not None and transient(error) and now - (item.first_refused or now) < LAUNCH_PATIENCE:
                if item.first_refused is None:
                    item.first_refused = now
                    log.warning("the job of %s waits: %s (trying again for up to %.0f s)", item.search_id, error,
                                LAUNCH_PATIENCE)
                item.next_try = now + min(30.0, 1.0 + (now - item.first_refused) / 4)
                if before:  # not launched: it stays queued as it was
                    _write_json(run_dir / JOB, before)
                else:
                    (run_dir / JOB).unlink(missing_ok=True)
                return False
            log.error("could not start the job of %s: %s", item.search_id, error)
            _write_json(run_dir / JOB, {**job, "ended_at": time.time(), "exit_code": 3, "error": "could not start"})
        else:
            _write_json(run_dir / JOB, {**job, **started})
            self.running.add(item.search_id)
            if process is not None:
                self.children.append(process)
        (run_dir / QUEUE).unlink(missing_ok=True)
        return True

    def _enqueue(self, search_id: str, command: Command, args: tuple[str, ...] = ()) -> None:
        item = Queued(time.time(), search_id, command, secrets.token_hex(4), tuple(args))
        _write_json(self.runs_dir / search_id / QUEUE,
                    {"command": command, "ticket": item.ticket, "queued_at": item.queued_at, "args": list(args)})
        self.queue.append(item)

    # ------------------------------------------------------------------ requests

    def new_id(self, name: str) -> str:
        return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"

    def submit(self, spec_data: dict, name: str) -> str:
        with self.lock:
            search_id = self.new_id(name)
            run_dir = self.runs_dir / search_id
            run_dir.mkdir()
            spec_data = {**spec_data, "output": {**spec_data.get("output", {}), "run_dir": str(run_dir)}}
            _write_json(run_dir / REQUEST, spec_data)  # the spec the job runs (a JSON spec file)
            submitted_at = time.time()
            _write_json(run_dir / SUBMITTED, {"id": search_id, "submitted_at": submitted_at})
            self.submitted[search_id] = submitted_at
            self._enqueue(search_id, "search")
        return search_id

    def resume(self, search_id: str) -> dict:
        with self.lock:
            state = self.status(search_id)["state"]
            if state in ("queued", "running"):
                raise Conflict(f"search {search_id} is {state}; nothing to resume")
            (self.runs_dir / search_id / CANCELLED).unlink(missing_ok=True)
            self._enqueue(search_id, "resume")
        return self.status(search_id)

    def finetune(self, search_id: str, args: tuple[str, ...]) -> dict:
        """Queue ``autocompress finetune`` of the search's run directory (``args``: its
        --point and --set finetune.* options, already validated)."""
        with self.lock:
            state = self.status(search_id)["state"]
            if state in ("queued", "running"):
                raise Conflict(f"search {search_id} is {state}; fine-tune it once it has ended")
            if not is_run_dir(self.runs_dir / search_id):
                raise Conflict(f"search {search_id} has no results to fine-tune")
            (self.runs_dir / search_id / CANCELLED).unlink(missing_ok=True)
            self._enqueue(search_id, "finetune", args)
        return self.status(search_id)

    def cancel(self, search_id: str) -> dict:
        with self.lock:
            state = self.status(search_id)["state"]
            if state not in ("queued", "running"):
                raise Conflict(f"search {search_id} is {state}; only queued or running searches can be cancelled")
            run_dir = self.runs_dir / search_id
            (run_dir / CANCELLED).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self.queue = [item for item in self.queue if item.search_id != search_id]
            (run_dir / QUEUE).unlink(missing_ok=True)
            job = _read_json(run_dir / JOB)
            if job and self.launcher.alive(run_dir, job):
                self.launcher.stop(run_dir, job)
        return self.status(search_id)

    # ------------------------------------------------------------------ state, from the run directory

    def exists(self, search_id: str) -> bool:
        return bool(ID_PATTERN.fullmatch(search_id)) and search_id in self.submitted

    def ids(self, limit: int, after: str | None = None) -> tuple[list[str], str | None]:
        """A page of search ids, newest first, and the id to ask the next page after."""
        with self.lock:
            ordered = sorted(self.submitted, key=lambda i: (self.submitted[i], i), reverse=True)
        start = ordered.index(after) + 1 if after in self.submitted else 0
        page = ordered[start:start + limit]
        return page, page[-1] if start + limit < len(ordered) else None

    def status(self, search_id: str) -> dict:
        """What a client may know of a search: state, progress, best point, job times,
        and for a failed job a summary that cannot carry text from files.

        A settled search (ended, neither queued nor alive) is read once and then answered
        from memory while none of the files its answer comes from has changed (their size
        and modification time), so that listing many finished searches does not open every
        run store on every request; anything queued, alive or running is read afresh."""
        run_dir = self.runs_dir / search_id
        with self.lock:
            queued = any(item.search_id == search_id for item in self.queue)
            alive = search_id in self.running
        key = None if queued or alive else _files_key(run_dir)
        cached = self._settled.get(search_id)
        if key is not None and cached is not None and cached[0] == key:
            return copy.deepcopy(cached[1])
        out = self._read_status(search_id)
        if key is not None and out["state"] in SETTLED and _files_key(run_dir) == key:
            self._settled[search_id] = (key, copy.deepcopy(out))
        return out

    def warm(self) -> None:
        """Read every known search's status once (the settled ones stay in memory)."""
        known, _ = self.ids(len(self.submitted))  # newest first, as a listing asks for them
        for search_id in known:
            if self._stop.is_set():
                return
            try:
                self.status(search_id)
            except Exception as error:  # noqa: BLE001 (a damaged run is reported when it is asked for)
                log.debug("status of %s not cached: %s", search_id, error)
        self.warmed.set()

    def _read_status(self, search_id: str) -> dict:
        run_dir = self.runs_dir / search_id
        request = _read_json(run_dir / REQUEST)
        with self.lock:  # tick() ends a job (running, then job.json's exit status) under this lock: one view of both
            job = _read_json(run_dir / JOB)
            queued = any(item.search_id == search_id for item in self.queue)
            alive = search_id in self.running
        out = {"id": search_id, "name": request.get("name"), "submitted_at": self.submitted.get(search_id),
               "strategy": (request.get("strategy") or {}).get("name"), "job": None, "progress": None,
               "best": None, "holdout": None, "error": None, "finetune": None}
        if job:
            out["job"] = {key: job.get(key) for key in ("command", "launcher", "started_at", "ended_at", "exit_code")}
            if job.get("ray_job"):
                out["job"]["ray_job"] = job["ray_job"]  # to follow it on the Ray dashboard
        store_state, progress = None, None
        if is_run_dir(run_dir):
            try:
                with RunStore.open_reader(run_dir) as store:
                    store_state, sessions = store.state(), store.sessions()
                    progress = session_progress(sessions, store_state) if sessions else None
                    out["finetune"] = finetune_status(store) or None
                    best, out["holdout"] = run_best(store) if sessions else (None, None)
                if progress is not None:
                    progress.stopped_by = StopReason.public(progress.stopped_by) or ""  # no error's message
                    out["progress"] = progress.to_dict()
                    out["best"] = best  # with a held-out split, once it is measured: the point it recommends
            except UserInputError:
                store_state = "unreadable"
        if (run_dir / CANCELLED).exists() and not queued:
            state = "running" if alive else "cancelled"  # running: it is stopping
        elif queued:
            state = "queued"
        elif alive or store_state == "running":  # running in the store: its driver is alive (a CLI resume, say)
            state = "running"
        elif store_state in ("done", "failed", "interrupted"):
            state = store_state  # the driver's own word (interrupted: killed, or stopped by a signal)
        elif store_state == "starting":
            state = "interrupted"  # its driver died before it began its session
        else:
            state = "failed"  # the job ended before its run store existed, or the store is unreadable
        if state == "done" and job.get("command") == "finetune" and job.get("exit_code") not in (0, None):
            state = "failed"  # the search is done, but the fine-tuning asked of it failed
        out["state"] = state
        if state == "failed":
            kind = _read_json(run_dir / ERROR_NAME).get("kind")
            out["error"] = ERROR_SUMMARIES.get(kind, UNEXPECTED) + SEE_LOG
        return out


SETTLED = ("done", "failed", "cancelled", "interrupted")
# what a settled search's status is read from: the request, the job record and its exit, the error kind,
# the cancel marker, the queue file and the run store (its WAL holds the last writes until a checkpoint)
_STATUS_FILES = (REQUEST, JOB, EXIT_NAME, ERROR_NAME, CANCELLED, QUEUE, DRIVER_NAME, DB_NAME,
                 DB_NAME + "-wal")


def _files_key(run_dir: Path) -> tuple:
    """Each status file's (size, modification time in ns), or None where it is missing."""
    key = []
    for name in _STATUS_FILES:
        try:
            info = os.stat(run_dir / name)
        except OSError:
            key.append(None)
        else:
            key.append((info.st_size, info.st_mtime_ns))
    return tuple(key)


class Conflict(Exception):
    pass
