"""The run store: one SQLite database (WAL mode) in the run directory.

The driver is its only writer and holds ``driver.lock`` (an OS file lock, released by
the kernel when the process dies, SIGKILL included) while it runs; a second driver
on the same directory is refused. Readers (``autocompress status``, ``pareto``, the
HTTP service) open it read-only while the driver writes.

Tables:

- ``meta``: key -> JSON value (format, the frozen spec, the space fingerprint, the
  baseline, budget overrides, ...);
- ``evaluations``: the journal, one row per completed probe, full evaluation, gate
  rejection or failure, in the order they happened. Each row is committed (and
  fsynced) before the strategy hears of it, so a kill loses at most the tasks in
  flight. A unique index makes a second full evaluation of a candidate impossible;
- ``sessions``: one row per ``search`` / ``resume`` of the run, with its state and
  counters, updated as it goes (a heartbeat for ``status``);
- ``workers``: what each worker is doing now;
- ``events``: worker deaths, retries, interrupts.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from autocompress.errors import AutocompressError, UserInputError
from autocompress.search.results import Result

FORMAT = "autocompress-run-v1"
DB_NAME = "store.sqlite"
LOCK_NAME = "driver.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('probe', 'full', 'gate', 'failed')),
    candidate_id TEXT NOT NULL,
    candidate TEXT NOT NULL,
    memory_bytes INTEGER, memory_saving REAL, drift REAL,
    gate TEXT, gate_reason TEXT, gate_threshold REAL,
    accuracy REAL, accuracy_drop REAL, feasible INTEGER,
    error TEXT, seconds REAL, worker TEXT, attempts INTEGER NOT NULL DEFAULT 1,
    finished_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_full_evaluation ON evaluations (candidate_id) WHERE kind = 'full';
CREATE UNIQUE INDEX IF NOT EXISTS one_probe ON evaluations (candidate_id) WHERE kind = 'probe';
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL, pid INTEGER, host TEXT,
    started_at REAL NOT NULL, updated_at REAL NOT NULL, ended_at REAL,
    state TEXT NOT NULL, stopped_by TEXT, workers INTEGER, executor TEXT,
    max_full_evaluations INTEGER, progress TEXT
);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY, session INTEGER, pid INTEGER, node TEXT,
    state TEXT, task TEXT, since REAL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER, at REAL NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL
);
"""

_RESULT_COLUMNS = ("memory_bytes", "memory_saving", "drift", "gate", "gate_reason", "accuracy",
                   "accuracy_drop", "feasible", "error", "seconds")


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / DB_NAME).is_file()


@dataclass
class Record:
    """One journal row."""

    seq: int
    session: int
    kind: str
    candidate: dict
    result: Result
    gate_threshold: float | None
    worker: str | None
    attempts: int
    finished_at: float


class RunStore:
    """A run directory's store. ``RunStore.create`` / ``RunStore.open_writer`` take the
    driver lock; ``RunStore.open_reader`` does not and never writes."""

    def __init__(self, run_dir: Path, connection: sqlite3.Connection, lock: FileLock | None):
        self.run_dir = run_dir
        self.db = connection
        self.lock = lock
        self.session: int | None = None

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _lock(run_dir: Path) -> FileLock:
        lock = FileLock(run_dir / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = RunStore._holder(run_dir)
            raise UserInputError(
                f"run directory {run_dir} is in use by another autocompress driver{holder}; "
                "wait for it to finish, stop it (Ctrl-C), or use another run directory"
            ) from None
        return lock

    @staticmethod
    def _holder(run_dir: Path) -> str:
        try:
            with RunStore.open_reader(run_dir) as reader:
                row = reader.db.execute("SELECT pid, host, command FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        except Exception:  # the holder may not have written its session yet
            return ""
        return f" (`{row[2]}`, pid {row[0]} on {row[1]})" if row else ""

    @staticmethod
    def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
        if readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
            db.execute("PRAGMA query_only = ON")
        else:
            db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a committed result survives a power cut too
        return db

    @classmethod
    def create(cls, run_dir: str | os.PathLike, meta: dict[str, Any]) -> RunStore:
        """A new run in ``run_dir`` (created; refused when it already holds a run)."""
        run_dir = Path(run_dir)
        if is_run_dir(run_dir):
            raise UserInputError(
                f"{run_dir} already holds a run; continue it with `autocompress resume {run_dir}`, "
                "or pass another --run-dir"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserInputError(f"output.run_dir: cannot create {run_dir}: {error}") from None
        lock = cls._lock(run_dir)
        try:
            if is_run_dir(run_dir):  # created between the check and the lock
                raise UserInputError(f"{run_dir} already holds a run; use `autocompress resume {run_dir}`")
            db = cls._connect(run_dir / DB_NAME, readonly=False)
            store = cls(run_dir, db, lock)
            with store.transaction():
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        db.execute(statement)
                for key, value in {"format": FORMAT, "created_at": time.time(), **meta}.items():
                    db.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open_writer(cls, run_dir: str | os.PathLike) -> RunStore:
        return cls._open(Path(run_dir), writer=True)

    @classmethod
    def open_reader(cls, run_dir: str | os.PathLike) -> RunStore:
        return cls._open(Path(run_dir), writer=False)

    @classmethod
    def _open(cls, run_dir: Path, *, writer: bool) -> RunStore:
        cls._check(run_dir)
        lock = cls._lock(run_dir) if writer else None
        db = None
        try:
            db = cls._connect(run_dir / DB_NAME, readonly=not writer)
            store = cls(run_dir, db, lock)
            store._check_format()
            return store
        except BaseException:
            if db is not None:
                db.close()
            if lock is not None:
                lock.release()
            raise

    @staticmethod
    def _check(run_dir: Path) -> None:
        if not run_dir.is_dir():
            raise UserInputError(f"run directory {run_dir} does not exist")
        if not is_run_dir(run_dir):
            raise UserInputError(f"{run_dir} is not an autocompress run directory (no {DB_NAME} in it)")

    def _check_format(self) -> None:
        try:
            value = self.meta("format")
        except sqlite3.DatabaseError as error:
            raise AutocompressError(f"{self.run_dir / DB_NAME} is not a readable run store: {error}") from None
        if value != FORMAT:
            raise AutocompressError(f"{self.run_dir / DB_NAME}: unknown store format {value!r} (expected {FORMAT})")

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ meta

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------ sessions

    def begin_session(self, command: str, *, workers: int, executor: str, max_full_evaluations: int) -> int:
        now = time.time()
        cursor = self.db.execute(
            "INSERT INTO sessions (command, pid, host, started_at, updated_at, state, workers, executor, "
            "max_full_evaluations) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (command, os.getpid(), socket.gethostname(), now, now, workers, executor, max_full_evaluations),
        )
        self.session = cursor.lastrowid
        self.db.execute("DELETE FROM workers")
        return self.session

    def heartbeat(self, progress: dict) -> None:
        self.db.execute("UPDATE sessions SET updated_at = ?, progress = ? WHERE id = ?",
                        (time.time(), json.dumps(progress), self.session))

    def end_session(self, state: str, stopped_by: str, progress: dict) -> None:
        now = time.time()
        self.db.execute("UPDATE sessions SET updated_at = ?, ended_at = ?, state = ?, stopped_by = ?, progress = ? "
                        "WHERE id = ?", (now, now, state, stopped_by, json.dumps(progress), self.session))
        self.db.execute("UPDATE workers SET state = 'stopped', task = NULL")

    def sessions(self) -> list[dict]:
        cursor = self.db.execute("SELECT * FROM sessions ORDER BY id")
        names = [c[0] for c in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        for row in rows:
            row["progress"] = json.loads(row["progress"]) if row["progress"] else {}
        return rows

    def driver_alive(self) -> bool:
        """Whether a driver holds this run's lock now."""
        lock = FileLock(self.run_dir / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    # ------------------------------------------------------------------ workers and events

    def worker(self, name: str, *, state: str, task: str | None = None, pid: int | None = None,
               node: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO workers (name, session, pid, node, state, task, since) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET state = excluded.state, task = excluded.task, since = excluded.since, "
            "pid = COALESCE(excluded.pid, pid), node = COALESCE(excluded.node, node)",
            (name, self.session, pid, node, state, task, time.time()),
        )

    def workers(self) -> list[dict]:
        cursor = self.db.execute("SELECT name, pid, node, state, task, since FROM workers ORDER BY name")
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def event(self, kind: str, message: str) -> None:
        self.db.execute("INSERT INTO events (session, at, kind, message) VALUES (?, ?, ?, ?)",
                        (self.session, time.time(), kind, message))

    def events(self, kind: str | None = None) -> list[dict]:
        query = "SELECT seq, session, at, kind, message FROM events"
        rows = self.db.execute(query + (" WHERE kind = ?" if kind else "") + " ORDER BY seq",
                               (kind,) if kind else ()).fetchall()
        return [dict(zip(("seq", "session", "at", "kind", "message"), row)) for row in rows]

    # ------------------------------------------------------------------ the journal

    def record(self, kind: str, candidate: dict, result: Result, *, gate_threshold: float | None = None,
               worker: str | None = None, attempts: int = 1) -> None:
        """Append one completed evaluation; durable when this returns."""
        values = [getattr(result, c) for c in _RESULT_COLUMNS]
        self.db.execute(
            f"INSERT INTO evaluations (session, kind, candidate_id, candidate, {', '.join(_RESULT_COLUMNS)}, "
            f"gate_threshold, worker, attempts, finished_at) VALUES ({', '.join('?' * (len(_RESULT_COLUMNS) + 8))})",
            (self.session, kind, result.candidate_id, json.dumps(candidate, sort_keys=True), *values,
             gate_threshold, worker, attempts, time.time()),
        )

    def records(self, kinds: tuple[str, ...] | None = None) -> list[Record]:
        query = (f"SELECT seq, session, kind, candidate_id, candidate, {', '.join(_RESULT_COLUMNS)}, "
                 "gate_threshold, worker, attempts, finished_at FROM evaluations")
        if kinds:
            query += f" WHERE kind IN ({', '.join('?' * len(kinds))})"
        rows = self.db.execute(query + " ORDER BY seq", kinds or ()).fetchall()
        out = []
        for row in rows:
            seq, session, kind, cid, candidate = row[:5]
            fields = dict(zip(_RESULT_COLUMNS, row[5:5 + len(_RESULT_COLUMNS)]))
            if fields["feasible"] is not None:
                fields["feasible"] = bool(fields["feasible"])
            threshold, worker, attempts, finished_at = row[5 + len(_RESULT_COLUMNS):]
            out.append(Record(seq, session, kind, json.loads(candidate), Result(cid, **fields), threshold,
                              worker, attempts, finished_at))
        return out

    def prior_results(self) -> dict[str, Result]:
        """Per candidate, what earlier sessions measured: its probe, its full evaluation
        or failure (gate rejections are decided again)."""
        prior: dict[str, Result] = {}
        for record in self.records(("probe", "full", "failed")):
            prior[record.result.candidate_id] = record.result
        return prior

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT kind, COUNT(*) FROM evaluations GROUP BY kind").fetchall()
        counts = {"probe": 0, "full": 0, "gate": 0, "failed": 0}
        counts.update(dict(rows))
        return counts
