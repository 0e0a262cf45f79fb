"""What an evaluation worker holds and does: the base model with its weights, the
validation data, the channel groups and the reference membrane potentials, built once;
then candidates arrive as small configs and numbers go back. The driver runs one in its
own process (:class:`~autocompress.searching.LocalExecutor`); the Ray executor runs one
per actor.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Callable
from pathlib import Path

from autocompress.engine.meta import migrate_frozen_spec
from autocompress.cachedir import cache_dir
from autocompress.compress import footprint
from autocompress.engine.pipeline import build_candidate, channel_groups, priced
from autocompress.engine.session import Session
from autocompress.proxy import ReferencePotentials
from autocompress.proxy.energy import count_activity, counting
from autocompress.searching import Candidate, pack

log = logging.getLogger("autocompress")

# Fault injection for tests and drills, at the worker's N-th full evaluation:
# "kill-on-full:N" makes the worker process SIGKILL itself (once per run directory);
# "wait-on-full:N" makes it write FAULT_WAITING into the run directory and wait there
# until FAULT_RELEASE exists (a search held mid-evaluation, for as long as a test needs);
# "wait-when-armed:TAG" holds the same way at the first shard it starts once the run
# directory holds "fault-arm-TAG", with "-TAG" after both file names (a test gives each
# node of a cluster its own TAG, and holds one node's workers while it kills another).
FAULT_ENV = "AUTOCOMPRESS_FAULT_INJECT"
FAULT_MARKER = "fault-injected"
FAULT_WAITING, FAULT_RELEASE, FAULT_ARM = "fault-waiting", "fault-release", "fault-arm"


def injected_fault(*kinds: str) -> tuple[str, int | str] | None:
    """``(kind, N)`` when :data:`FAULT_ENV` asks for one of ``kinds`` (``KIND:N``);
    ``(kind, TAG)`` for ``wait-when-armed:TAG``."""
    kind, _, value = os.environ.get(FAULT_ENV, "").partition(":")
    if kind not in kinds:
        return None
    if kind == "wait-when-armed":
        return (kind, value) if value.isidentifier() else None
    return (kind, int(value)) if value.isdigit() else None


def kill_once(folder: Path) -> None:
    """SIGKILL this process, unless :data:`FAULT_MARKER` in ``folder`` says one already died
    there (only the first to get here dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / FAULT_MARKER).open("x").close()
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def spec_from_frozen(data: dict, spec_dir: str | None = None, *, check_paths: bool = True,
                     confine: list[str] | None = None):
    """The spec a run directory froze (paths already absolute), with the behaviour of the
    version that started it where a later one changed a default. ``spec_dir``, the
    original spec's folder, is where a custom model's factory module may live;
    ``confine``: see :func:`autocompress.spec.validate_spec`."""
    from autocompress.spec import validate_spec

    return validate_spec(migrate_frozen_spec(data), base_dir=spec_dir, source="the run's frozen spec",
                         check_paths=check_paths, confine=confine)


class Worker:
    """``probe``: a candidate's footprint and drift (one calibration forward); ``full``:
    its top-1 accuracy on the validation set, or on a shard of it (positions of the run's
    seeded validation order); ``holdout``: the same over the held-out split. The last
    built model is kept, so a probe followed by the full evaluation (or the shards of it
    this worker gets) builds it once."""

    def __init__(self, session: Session, groups=None, *, proxy: bool = True, run_dir: str | None = None):
        self.session = session
        self.groups = groups if groups is not None else channel_groups(session)
        self.by_name = self.groups.by_name()
        self.proxy = proxy
        self.run_dir = run_dir
        self.should_stop: Callable[[], bool] | None = None  # asked between batches of a full evaluation
        self.calibration = session.data.calibration.to(session.device)
        self.full_count = 0
        self._reference = None
        self._order = None
        self._holdout = None
        self._last: tuple[str, object] | None = None
        self._fault = injected_fault("kill-on-full", "wait-on-full", "wait-when-armed")

    @classmethod
    def from_frozen(cls, spec_data: dict, spec_dir: str | None, *, proxy: bool, device: str | None = None,
                    threads: int | None = None, run_dir: str | None = None) -> Worker:
        """A worker in a process of its own (a Ray actor), from the run's frozen spec."""
        if threads:
            import torch

            torch.set_num_threads(threads)
        session = Session.open(spec_from_frozen(spec_data, spec_dir), device=device, say=lambda _m: None)
        return cls(session, proxy=proxy, run_dir=run_dir)

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": socket.gethostname(), "device": str(self.session.device)}

    @property
    def reference(self):
        if self._reference is None:
            self._reference = ReferencePotentials(self.session.model, self.calibration,
                                                  logits=self.session.spec.proxy.logits)
        return self._reference

    def build(self, candidate):
        candidate = Candidate.from_dict(candidate) if isinstance(candidate, dict) else candidate
        if self._last is None or self._last[0] != candidate.id:
            self._last = (candidate.id, build_candidate(self.session, self.groups, candidate.to_dict()))
        return self._last[1]

    def probe(self, candidate) -> tuple[int, float | None, dict]:
        """Footprint, drift and the spikes and energy per image, counted on the drift's own
        forward pass (one forward of its own with the proxy off)."""
        import torch

        model = self.build(candidate)
        drift = None
        with counting(model, len(self.calibration)) as activity:
            if self.proxy:
                drift = self.reference.drift(model, self.by_name, model.pruned_channels)
            else:
                with torch.inference_mode():
                    model(self.calibration)
        return footprint(model), drift, self.measured(activity, model)

    def measured(self, activity, model) -> dict:
        """The spikes and energy summary, with the measured latency when the spec asks for it."""
        spec = self.session.spec
        summary = priced(self.session, activity)
        if spec.latency.measure:
            from autocompress.evaluation import measure_latency

            timed = measure_latency(model, self.calibration, batch_size=spec.latency.batch_size,
                                    repeats=spec.latency.repeats, warmup=spec.latency.warmup)
            summary.update(latency_ms=timed["ms"], latency_batch_ms=timed["batch_ms"])
        return summary

    @property
    def order(self):
        """The run's validation order; set up at the worker's first evaluation, with the
        node's decoded cache (the first worker on a node builds it, the others read it)."""
        if self._order is None:
            if self.session.spec.evaluation.decoded_cache:
                self.session.data.use_decoded_cache(cache_dir(), workers=self.session.spec.data.workers,
                                                    say=log.info)
            self._order = self.session.evaluation_order()
        return self._order

    def _positions(self, shard: tuple[int, int] | None):
        return self.order if shard is None else self.order[shard[0]:shard[1]]

    def full(self, candidate, shard: tuple[int, int] | None = None):
        """The candidate's evaluation over ``shard`` (the whole order by default): accuracy,
        correct, total and per-image correctness."""
        model = self.build(candidate)
        if shard is None or shard[0] == 0:  # a full evaluation counts once, at its first shard
            self.full_count += 1
            self._maybe_fault()
        if self._fault is not None and self._fault[0] == "wait-when-armed" and self.run_dir is not None:
            self._hold_when_armed(Path(self.run_dir), str(self._fault[1]))
        return self.session.evaluate(model, indices=self._positions(shard), should_stop=self.should_stop)

    def holdout(self, candidate, shard: tuple[int, int] | None = None):
        """The candidate's (the base model's, for ``None``) evaluation over ``shard`` of
        the held-out items (all of them by default), which the search never sees."""
        if self._holdout is None:
            _ = self.order  # the node's decoded cache, set up as for the search's own evaluations
            self._holdout = self.session.holdout_order()
        positions = self._holdout if shard is None else self._holdout[shard[0]:shard[1]]
        model = self.session.model if candidate is None else self.build(candidate)
        return self.session.evaluate(model, indices=positions)

    def baseline(self) -> dict:
        """The base model over the whole validation order: top-1, the readable images, the
        per-image correctness (packed) that early stopping compares with, and with
        autocast on, FP32's top-1 beside it (the search refuses autocast that changes it)."""
        result = self.session.evaluate(indices=self.order)
        out = {"accuracy": result.accuracy, "total": result.total, "count": len(self.order),
               "per_image": pack(result.per_image), "autocast": self.session.spec.evaluation.autocast,
               "energy": self.measured(count_activity(self.session.model, self.calibration), self.session.model)}
        if out["autocast"] != "off":
            out["fp32_accuracy"] = self.session.evaluate(indices=self.order, autocast="off").accuracy
        return out

    def _maybe_fault(self) -> None:
        if self._fault is None or self.full_count != self._fault[1] or self.run_dir is None:
            return
        if self._fault[0] == "wait-on-full":
            _hold(Path(self.run_dir) / FAULT_WAITING, Path(self.run_dir) / FAULT_RELEASE)
            return
        kill_once(Path(self.run_dir))

    @staticmethod
    def _hold_when_armed(run_dir: Path, tag: str) -> None:
        armed = run_dir / f"{FAULT_ARM}-{tag}"
        if armed.exists():
            armed.unlink(missing_ok=True)  # once per arming
            _hold(run_dir / f"{FAULT_WAITING}-{tag}", run_dir / f"{FAULT_RELEASE}-{tag}")


def _hold(waiting: Path, release: Path) -> None:
    """Say so in ``waiting`` (this process's id), then wait until ``release`` exists."""
    waiting.write_text(str(os.getpid()))
    while not release.exists():
        time.sleep(0.05)  # a signal (Ctrl-C, SIGTERM) still stops the driver here
