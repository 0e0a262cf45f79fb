"""The process between the service and a search job: ``python -m
autocompress.service.supervisor --run-dir DIR --ticket T --lock-fd N -- ARGV...``.

The service starts it in a session of its own, so it outlives a restart of the
service. It

- holds ``job.lock`` for its whole life: the service passes the lock already taken
  (an inherited file descriptor), so "the lock is held" means "this job is alive",
  with no window after the start and no pid that could be reused;
- runs ``autocompress ARGV`` as its child (output to ``job.log``), forwarding SIGTERM
  and SIGINT to it, so a cancel stops the driver cleanly (exit 130);
- writes the child's real exit status to ``exit.json`` (with the job's ticket), also
  when the service that started it is long gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autocompress.atomic import atomic_write_json
from autocompress.errors import ERROR_FILE_ENV

EXIT_NAME, LOG_NAME, ERROR_NAME = "exit.json", "job.log", "error.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocompress.service.supervisor")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--ticket", required=True)
    parser.add_argument("--lock-fd", type=int, help="an inherited descriptor of job.lock, already locked")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    run_dir: Path = args.run_dir
    (run_dir / ERROR_NAME).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", ERROR_FILE_ENV: str(run_dir / ERROR_NAME)}
    with open(run_dir / LOG_NAME, "ab") as log:
        log.write(f"\n$ autocompress {' '.join(command)}\n".encode())
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "autocompress", *command], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=run_dir)

    def forward(signum, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - wait() retries on EINTR itself
            continue
    atomic_write_json(run_dir / EXIT_NAME, {"ticket": args.ticket, "exit_code": code, "ended_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
