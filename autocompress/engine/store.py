"""The run store: one SQLite database (WAL mode) in the run directory.

The driver is its only writer and holds ``driver.lock`` (an OS file lock, released by
the kernel when the process dies, SIGKILL included) while it runs; a second driver
on the same directory is refused, naming the live holder. The holder writes who it is
into ``driver.json`` (pid, host, the process's start time); readers (``autocompress
status``, ``pareto``, the HTTP service) judge liveness from that, never by taking the
lock, and open the store read-only (also in a read-only directory).

The store is created whole or not at all: schema and metadata are committed under a
temporary name, then renamed to ``store.sqlite``; a directory without that file holds
no run. The writer notices the file being deleted or replaced under it and stops.

Tables:

- ``meta``: key -> JSON value (format, the frozen spec, the space fingerprint, the
  baseline, budget overrides, ...), one pydantic model a key with the migrations of
  older layouts (:mod:`autocompress.engine.meta`);
- ``evaluations``: the journal, one row per completed probe, full evaluation, gate
  rejection or failure, in the order they happened. Each row is committed (and
  fsynced) before the strategy hears of it, so a kill loses at most the tasks in
  flight. A unique index makes a second full evaluation of a candidate impossible;
- ``sessions``: one row per ``search`` / ``resume`` of the run, with its state and
  counters, updated as it goes (a heartbeat for ``status``);
- ``workers``: what each worker is doing now;
- ``events``: worker deaths, retries, interrupts.

Who drives a run and whether it still runs is :mod:`autocompress.engine.liveness`. This
module stays one file (about 530 lines) on purpose: its tables share one connection, one
transaction discipline and one check that the file is still the one opened, which a split
would spread over modules that must then agree on them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Iterator

from filelock import FileLock

from autocompress.engine.liveness import (  # noqa: F401 (identity_alive, process_started: the engine exports them)
    DRIVER_NAME,
    identity_alive,
    process_started,
    read_driver,
    take_driver_lock,
)
from autocompress.engine.meta import MetaRecord, read_meta, written_meta
from autocompress.errors import UserInputError
from autocompress.limits import Limits
from autocompress.searching import Constraints, Result

log = logging.getLogger("autocompress.store")

FORMAT = "autocompress-run-v1"
DB_NAME = "store.sqlite"
CREATING_NAME = ".store-creating.sqlite"

T = TypeVar("T", bound=MetaRecord)


class StoreError(UserInputError):
    """A run store that cannot be used (damaged, unreadable, deleted or replaced)."""


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
    finished_at REAL NOT NULL,
    images INTEGER, early_stopped INTEGER, drop_bound REAL,
    energy_mj REAL, synops REAL, firing_rate REAL, rates TEXT, latency_ms REAL, latency_batch_ms REAL,
    worse INTEGER, better INTEGER, drop_upper REAL,
    stop TEXT, positions INTEGER, correct INTEGER, drop_low REAL, drop_high REAL
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
                   "accuracy_drop", "feasible", "error", "seconds", "images", "early_stopped", "drop_bound",
                   "energy_mj", "synops", "firing_rate", "rates", "latency_ms", "latency_batch_ms", "worse", "better",
                   "drop_upper", "stop", "positions", "correct", "drop_low", "drop_high")
# columns later versions added to the evaluations table: added to an older store when a
# session opens it to write; read as NULL from one opened to read
_ADDED_COLUMNS = {"images": "INTEGER", "early_stopped": "INTEGER", "drop_bound": "REAL",
                  "energy_mj": "REAL", "synops": "REAL", "firing_rate": "REAL", "rates": "TEXT",
                  "latency_ms": "REAL", "latency_batch_ms": "REAL", "worse": "INTEGER", "better": "INTEGER",
                  "drop_upper": "REAL", "stop": "TEXT", "positions": "INTEGER", "correct": "INTEGER",
                  "drop_low": "REAL", "drop_high": "REAL"}


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
        self.path = run_dir / DB_NAME
        self._file = self._file_id() if lock is not None else None  # what the writer opened
        self._heartbeat: tuple[threading.Event, threading.Thread] | None = None
        self._missing: set[str] = set()  # columns an older store lacks (read as NULL)

    def _file_id(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def intact(self) -> bool:
        """Whether ``store.sqlite`` is still the file this writer opened."""
        return self._file is None or self._file_id() == self._file

    def _check_intact(self) -> None:
        if not self.intact():
            raise StoreError(f"{self.path} was deleted or replaced while this search ran; it stops rather than "
                             "write results nobody can read")

    def save_copy(self, target: Path) -> Path:
        """Copy the database this writer has open (also when its file was deleted) to ``target``."""
        copy = sqlite3.connect(target)
        try:
            self.db.backup(copy)
        finally:
            copy.close()
        return target

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _lock(run_dir: Path):
        try:
            return take_driver_lock(run_dir, command_of=RunStore._last_command)
        except OSError as error:
            raise StoreError(f"run directory {run_dir}: cannot take its driver lock ({error.strerror or error}); "
                             "a search needs a writable run directory (status, pareto and report only read it)") from None

    @staticmethod
    def _last_command(run_dir: Path, pid: int) -> str | None:
        """The command of the run's last session, when ``pid`` runs it."""
        try:
            with RunStore.open_reader(run_dir) as reader:
                row = reader.db.execute("SELECT pid, command FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        except UserInputError:  # no store yet: the holder is creating it
            return None
        return row[1] if row and row[0] == pid else None

    @staticmethod
    def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
                db.execute("PRAGMA query_only = ON")
                try:
                    db.execute("SELECT 1 FROM meta LIMIT 1")
                except sqlite3.OperationalError as error:
                    if "unable to open" not in str(error) and "readonly" not in str(error):
                        raise
                    # a read-only directory: WAL readers cannot make the -shm file; nobody can write there either
                    db.close()
                    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=10, check_same_thread=False)
            else:
                db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")  # a committed result survives a power cut too
        except sqlite3.DatabaseError as error:
            raise StoreError(_unreadable(path, error)) from None
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
            cls._write_new(run_dir, meta)
            db = cls._connect(run_dir / DB_NAME, readonly=False)
            return cls(run_dir, db, lock)
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def _write_new(run_dir: Path, meta: dict[str, Any]) -> None:
        """Schema and metadata committed under a temporary name, then renamed into place:
        a kill at any point leaves a whole store or none (a leftover is removed here)."""
        creating = run_dir / CREATING_NAME
        for leftover in (creating, Path(f"{creating}-journal")):
            leftover.unlink(missing_ok=True)
        db = sqlite3.connect(creating, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            for key, value in {"format": FORMAT, "created_at": time.time(), **meta}.items():
                db.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(written_meta(key, value))))
            db.execute("COMMIT")
        finally:
            db.close()
        os.replace(creating, run_dir / DB_NAME)
        directory = os.open(run_dir, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

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
            store._upgrade(writer)
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
        except (sqlite3.DatabaseError, ValueError) as error:  # ValueError: a meta value that is not JSON
            raise StoreError(_unreadable(self.path, error)) from None
        if value != FORMAT:
            raise StoreError(f"{self.path}: unknown store format {str(value)[:40]!r} (expected {FORMAT}); it was "
                             "written by another program or another version of autocompress")

    def _upgrade(self, writer: bool) -> None:
        have = {row[1] for row in self.db.execute("PRAGMA table_info(evaluations)")}
        self._missing = {name for name in _ADDED_COLUMNS if name not in have}
        if writer:
            for name in sorted(self._missing):
                self.db.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {_ADDED_COLUMNS[name]}")
            self._missing = set()

    def close(self) -> None:
        self.stop_heartbeat()
        self.db.close()
        if self.lock is not None:
            try:
                (self.run_dir / DRIVER_NAME).unlink(missing_ok=True)  # ours: we hold the lock
            except OSError:
                pass
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
        """The value of ``key``, read through its model in :mod:`autocompress.engine.meta`
        (what an older version wrote comes back in today's layout), as plain JSON."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else read_meta(key, json.loads(row[0]))

    def set_meta(self, key: str, value: Any) -> None:
        """Write ``key``, its value checked against its model first."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(written_meta(key, value))))

    def get(self, model: type[T]) -> T | None:
        """The typed value of ``model.KEY`` (None when the run has none)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (model.KEY,)).fetchone()
        return None if row is None else model.model_validate(json.loads(row[0]))

    def put(self, value: MetaRecord) -> None:
        self.set_meta(value.KEY, value)

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

    def start_heartbeat(self, interval: float = 2.0) -> None:
        """Keep the session's ``updated_at`` fresh from a thread of its own (its own
        connection), also while the driver is busy for long: a long evaluation in this
        process, the replay of a long journal."""
        stop = threading.Event()

        def beat() -> None:
            db = None
            try:
                while not stop.wait(interval) and self.intact():
                    db = db or sqlite3.connect(self.path, timeout=10, isolation_level=None)
                    db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), self.session))
            except sqlite3.Error as error:  # the main thread reports store problems; this one only stops
                log.debug("heartbeat stopped: %s", error)
            finally:
                if db is not None:
                    db.close()

        thread = threading.Thread(target=beat, name="autocompress-heartbeat", daemon=True)
        thread.start()
        self._heartbeat = (stop, thread)

    def stop_heartbeat(self) -> None:
        beating = self._heartbeat
        if beating is not None:
            beating[0].set()
            beating[1].join(timeout=30)
            self._heartbeat = None

    def heartbeat(self, progress: dict) -> None:
        self._check_intact()
        self.db.execute("UPDATE sessions SET updated_at = ?, progress = ? WHERE id = ?",
                        (time.time(), json.dumps(progress), self.session))

    def end_session(self, state: str, stopped_by: str, progress: dict) -> None:
        self.stop_heartbeat()
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
        """Whether a driver runs this run now (judged from ``driver.json``, without the lock)."""
        if self.lock is not None:
            return True
        who = read_driver(self.run_dir)
        if who is None:
            return False
        row = self.db.execute("SELECT MAX(updated_at) FROM sessions").fetchone()
        return identity_alive(who, heartbeat_at=max(who.get("since") or 0.0, (row[0] if row else None) or 0.0))

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
        self._check_intact()
        values = _column_values(result)
        self.db.execute(
            f"INSERT INTO evaluations (session, kind, candidate_id, candidate, {', '.join(_RESULT_COLUMNS)}, "
            f"gate_threshold, worker, attempts, finished_at) VALUES ({', '.join('?' * (len(_RESULT_COLUMNS) + 8))})",
            (self.session, kind, result.candidate_id, json.dumps(candidate, sort_keys=True), *values,
             gate_threshold, worker, attempts, time.time()),
        )

    def complete(self, result: Result, *, worker: str | None = None) -> None:
        """Replace a full evaluation stopped early by its completion over every image, in
        place (its place in the journal kept); durable when this returns."""
        self._check_intact()
        values = _column_values(result)
        updated = self.db.execute(
            f"UPDATE evaluations SET {', '.join(c + ' = ?' for c in _RESULT_COLUMNS)}, "
            "worker = COALESCE(?, worker), finished_at = ? WHERE kind = 'full' AND candidate_id = ?",
            (*values, worker, time.time(), result.candidate_id),
        ).rowcount
        if updated != 1:
            raise RuntimeError(f"no stopped full evaluation of {result.candidate_id} to complete")

    def records(self, kinds: tuple[str, ...] | None = None) -> list[Record]:
        columns = ", ".join("NULL" if c in self._missing else c for c in _RESULT_COLUMNS)
        query = (f"SELECT seq, session, kind, candidate_id, candidate, {columns}, "
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
            fields["early_stopped"] = bool(fields["early_stopped"])
            fields["rates"] = json.loads(fields["rates"]) if fields["rates"] else None
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

    def state(self) -> str:
        """running, done, interrupted, failed, or starting (no session yet)."""
        sessions = self.sessions()
        if not sessions:
            return "starting"
        state = sessions[-1]["state"]
        if state == "running" and not self.driver_alive():
            return "interrupted"  # the driver died without ending its session (killed)
        return state

    def limits_in_force(self, given: Limits | None = None) -> Limits:
        """The caps a later session of the run works under: those ``given`` now over those
        the run started with (a run started with a raised cap resumes and fine-tunes under it)."""
        return (given or Limits()).merged(self.meta("limits"))

    def constraints(self) -> Constraints | None:
        """The run's constraints (None until its baseline accuracy is measured)."""
        values = self.meta("constraints")
        return None if values is None else Constraints(**values)

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT kind, COUNT(*) FROM evaluations GROUP BY kind").fetchall()
        counts = {"probe": 0, "full": 0, "gate": 0, "failed": 0}
        counts.update(dict(rows))
        return counts


def _column_values(result: Result) -> list:
    """A result's values for the evaluations table's result columns, in their order."""
    return [json.dumps(result.rates) if c == "rates" and result.rates is not None else getattr(result, c)
            for c in _RESULT_COLUMNS]


def _unreadable(path: Path, error: Exception) -> str:
    return (f"{path} is not a readable run store ({error}); it is damaged or not an autocompress store. "
            "Restore it from a backup, or start a new run in another directory")
