"""What an evaluation worker holds and does: the base model with its weights, the
validation data, the channel groups and the reference membrane potentials, built once;
then candidates arrive as small configs (``{"prune": ..., "bits": ...}``) and numbers
go back. The in-process executor runs one in the driver; the Ray executor runs one
per actor.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from autocompress.compress import find_channel_groups
from autocompress.engine.evaluator import SessionEvaluator
from autocompress.engine.session import Session
from autocompress.search.loop import TaskOutcome
from autocompress.search.space import Candidate

# Fault injection for tests and drills, at the worker's N-th full evaluation:
# "kill-on-full:N" makes the worker process SIGKILL itself (once per run directory);
# "wait-on-full:N" makes it write FAULT_WAITING into the run directory and wait there
# until FAULT_RELEASE exists (a search held mid-evaluation, for as long as a test needs).
FAULT_ENV = "AUTOCOMPRESS_FAULT_INJECT"
FAULT_MARKER = "fault-injected"
FAULT_WAITING, FAULT_RELEASE = "fault-waiting", "fault-release"


def spec_from_frozen(data: dict, spec_dir: str | None = None, *, check_paths: bool = True,
                     confine: list[str] | None = None):
    """The spec a run directory froze (paths already absolute). ``spec_dir``, the
    original spec's folder, is where a custom model's factory module may live;
    ``confine``: see :func:`autocompress.spec.validate_spec`."""
    from autocompress.spec import validate_spec

    return validate_spec(data, base_dir=spec_dir, source="the run's frozen spec", check_paths=check_paths,
                         confine=confine)


class Worker:
    def __init__(self, spec_data: dict | None = None, spec_dir: str | None = None, *,
                 session: Session | None = None, groups=None,
                 proxy: bool = True, device: str | None = None, threads: int | None = None,
                 run_dir: str | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        if session is None:
            session = Session.open(spec_from_frozen(spec_data, spec_dir), device=device, say=lambda _m: None)
        if groups is None:
            groups = find_channel_groups(session.model, example=session.data.calibration[:8].to(session.device))
        self.session = session
        self.evaluator = SessionEvaluator(session, groups, proxy=proxy)
        self.run_dir = run_dir
        self.full_count = 0
        self._fault = self._parse_fault()

    @staticmethod
    def _parse_fault() -> tuple[str, int] | None:
        kind, _, count = os.environ.get(FAULT_ENV, "").partition(":")
        if kind in ("kill-on-full", "wait-on-full") and count.isdigit():
            return kind, int(count)
        return None

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": socket.gethostname(), "device": str(self.session.device)}

    def baseline(self) -> float:
        return self.evaluator.baseline_accuracy()

    def _maybe_fault(self) -> None:
        if self._fault is None or self.full_count != self._fault[1] or self.run_dir is None:
            return
        if self._fault[0] == "wait-on-full":
            release = Path(self.run_dir) / FAULT_RELEASE
            (Path(self.run_dir) / FAULT_WAITING).write_text(str(os.getpid()))
            while not release.exists():
                time.sleep(0.05)  # a signal (Ctrl-C, SIGTERM) still stops the driver here
            return
        marker = Path(self.run_dir) / FAULT_MARKER
        try:
            marker.open("x").close()  # only the first worker to get here dies
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    def run(self, stage: str, candidate: dict) -> TaskOutcome:
        """Probe or fully evaluate one candidate; an exception becomes the outcome's error."""
        start = time.perf_counter()
        try:
            config = Candidate.from_dict(candidate)
            if stage == "probe":
                memory, drift = self.evaluator.probe(config)
                return TaskOutcome(memory_bytes=memory, drift=drift, seconds=time.perf_counter() - start)
            self.full_count += 1
            self._maybe_fault()
            return TaskOutcome(accuracy=self.evaluator.full(config), seconds=time.perf_counter() - start)
        except Exception as error:  # the candidate failed, not the worker
            return TaskOutcome(error=f"{type(error).__name__}: {error}", seconds=time.perf_counter() - start)
