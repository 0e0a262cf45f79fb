"""Who drives a run, and whether it still runs: the driver lock (an OS file lock the kernel
releases when the process dies), ``driver.json`` (pid, host, the process's start time) and
the liveness checks readers make from it without taking the lock."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

import psutil
from filelock import FileLock, Timeout

from autocompress.atomic import atomic_write_json
from autocompress.errors import UserInputError

LOCK_NAME = "driver.lock"
DRIVER_NAME = "driver.json"
REMOTE_STALE_SECONDS = 60.0  # a driver on another host is alive while it heartbeats within this


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def identity() -> dict:
    """This process as liveness checks know it: pid, host, start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_started": process_started(os.getpid())}


def identity_alive(who: dict | None, *, heartbeat_at: float | None = None) -> bool:
    """Whether the process ``who`` names still runs. On this host: the pid exists and
    started when recorded (a reused pid does not count). On another host: its heartbeat
    is recent."""
    if not who or not who.get("pid"):
        return False
    if who.get("host") != socket.gethostname():
        return heartbeat_at is not None and time.time() - heartbeat_at < REMOTE_STALE_SECONDS
    started = process_started(int(who["pid"]))
    recorded = who.get("process_started")
    return started is not None and (recorded is None or abs(started - recorded) < 1.0)


def read_driver(run_dir: str | os.PathLike) -> dict | None:
    """What ``driver.json`` says of the run's driver (None when there is none)."""
    try:
        data = json.loads((Path(run_dir) / DRIVER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def take_driver_lock(run_dir: Path, command_of: Callable[[Path, int], str | None] | None = None) -> FileLock:
    """The run directory's driver lock, taken without waiting, with this process written into
    ``driver.json``. A live holder is named in the refusal (``command_of(run_dir, pid)``:
    the command it runs, when known). An OSError (a read-only directory) goes to the caller."""
    lock = FileLock(run_dir / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserInputError(
            f"run directory {run_dir} is in use by another autocompress driver{_holder(run_dir, command_of)}; "
            "wait for it to finish, stop it (Ctrl-C), or use another run directory"
        ) from None
    try:
        atomic_write_json(run_dir / DRIVER_NAME, {**identity(), "since": time.time()})
    except BaseException:
        lock.release()
        raise
    return lock


def _holder(run_dir: Path, command_of) -> str:
    who = read_driver(run_dir)
    if not who or not identity_alive(who, heartbeat_at=who.get("since")):
        return " (a process that has not said who it is yet)"
    command = command_of(run_dir, who["pid"]) if command_of is not None else None
    return f" ({f'`{command}`, ' if command else ''}pid {who['pid']} on {who['host']})"
