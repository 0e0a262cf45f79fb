"""The Python API: start a search, open a run, read its Pareto set, export, fine-tune, evaluate.

Shaped like the tools users know (Optuna's ``create_study().optimize()``, Ray Tune's
``Tuner.fit()``): :func:`search` runs a search to its end and returns a :class:`Run`;
:func:`open_run` gives the :class:`Run` of an existing run directory (also while its search
runs in another process). A run's Pareto points are typed (:class:`Point`); its settings are
the spec's own pydantic sections (:class:`~autocompress.spec.BudgetSpec`,
:class:`~autocompress.spec.FinetuneSpec`, ...) or mappings of their fields.

Nothing here prints: progress goes to the ``on_progress`` callback and messages to the
``autocompress`` logger (configure :mod:`logging` to see them). The defaults are the spec's
defaults; the CLI (``autocompress search`` ...) is a thin layer over these functions. ::

    import autocompress

    run = autocompress.search("experiments/digits/spec.yaml", budget={"max_full_evaluations": 3})
    best = run.best                                  # the recommended Point, or None
    exported = run.export(best, "model.safetensors")
    model = autocompress.load(exported.path)
    print(autocompress.evaluate("experiments/digits/spec.yaml", model).accuracy)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autocompress.console import log_info
from autocompress.errors import SearchInterrupted, UserInputError

from autocompress.spec.loading import merge_sections, validate_spec

if TYPE_CHECKING:
    from autocompress.engine.progress import Progress
    from autocompress.limits import Limits
    from autocompress.models import SViT
    from autocompress.spec import Spec

PathLike = str | os.PathLike[str]
Say = Callable[[str], None]


@dataclass(frozen=True)
class HeldOut:
    """A point measured on the held-out split (images the search never chose on)."""

    accuracy: float  # top-1, percent
    accuracy_drop: float  # points below the baseline on the same images
    drop_upper: float | None  # the drop's upper confidence bound (None: the run decides on the drop alone)
    images: int
    feasible: bool  # what the recommendation is decided on

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HeldOut | None:
        if not data:
            return None
        return cls(accuracy=data["accuracy"], accuracy_drop=data["accuracy_drop"], drop_upper=data.get("drop_upper"),
                   images=data["images"], feasible=bool(data["feasible"]))


@dataclass(frozen=True)
class Point:
    """One fully evaluated candidate of a run (a Pareto point or a near miss), as pareto.json
    holds it: measured on the selection split; ``holdout`` once measured on the held-out one."""

    id: str
    accuracy: float  # top-1 on the selection split, percent
    accuracy_drop: float  # points below the baseline there
    memory_bytes: int
    memory_saving: float  # fraction of the baseline's bytes saved
    feasible: bool  # within every constraint on the selection split
    recommended: bool  # the run's best point (decided on the held-out split when there is one)
    drop_upper: float | None = None
    images: int | None = None
    energy_mj: float | None = None
    energy_saving: float | None = None
    latency_ms: float | None = None
    holdout: HeldOut | None = None
    config: dict[str, Any] | None = field(default=None, repr=False)  # per-layer rates and bit-widths

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], best: str | None = None) -> Point:
        return cls(id=data["id"], accuracy=data["accuracy"], accuracy_drop=data["accuracy_drop"],
                   memory_bytes=data["memory_bytes"], memory_saving=data["memory_saving"],
                   feasible=bool(data["feasible"]), recommended=data["id"] == best,
                   drop_upper=data.get("drop_upper"), images=data.get("images"), energy_mj=data.get("energy_mj"),
                   energy_saving=data.get("energy_saving"), latency_ms=data.get("latency_ms"),
                   holdout=HeldOut.from_dict(data.get("holdout")), config=data.get("config"))


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands (``autocompress status``); ``details`` is the whole report."""

    run_dir: Path
    state: str  # running, finished, interrupted, failed, ...
    stopped_by: str | None
    full_evaluations: int
    max_full_evaluations: int | None
    best: str | None  # the recommended point's id so far
    details: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Exported:
    """A model file written by :meth:`Run.export` (load it with :func:`autocompress.load`)."""

    path: Path
    point: str
    file_bytes: int
    memory_bytes: int
    accuracy: float | None  # the accuracy recorded for it (selection split; the tuned one for ``tuned``)
    tuned: bool
    details: dict[str, Any] = field(repr=False)  # held-out figures, whether it is recommended, ...


@dataclass(frozen=True)
class Tuned:
    """One point's recovery fine-tuning (:meth:`Run.finetune`)."""

    point: str
    accuracy_before: float
    accuracy: float
    accuracy_drop: float
    feasible_before: bool
    feasible: bool
    memory_bytes: int
    file: Path  # the tuned model (``Run.export(point, tuned=True)`` copies it)
    holdout: dict[str, Any] | None
    details: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy of a model on a spec's validation images (:func:`evaluate`)."""

    accuracy: float  # percent
    correct: int
    total: int
    split: str
    footprint_bytes: int  # parameters and buffers at their stored dtype
    seconds: float
    device: str
    skipped: list[str]  # unreadable images
    checkpoint: str | None  # the spec model's checkpoint file (None: random weights)
    data: str  # what was read, in words


def _spec_data(spec: Any) -> tuple[dict[str, Any], Path, str]:
    """(parsed data, base folder of its relative paths, source name) of a spec given as a
    path, a :class:`Spec` or a mapping."""
    from autocompress.spec import Spec, read_spec_file

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        return read_spec_file(path), path.resolve().parent, str(path)
    if isinstance(spec, Spec):  # paths in it are absolute; a custom factory may live beside its spec
        return spec.model_dump(mode="json"), getattr(spec.model, "_spec_dir", None) or Path.cwd(), spec.name
    if isinstance(spec, Mapping):
        return dict(spec), Path.cwd(), "spec"
    raise TypeError(f"spec: a path, an autocompress.spec.Spec or a mapping, not {type(spec).__name__}")


def validate(spec: Any, *, check_paths: bool = True, **sections: Any) -> Spec:
    """A spec (a file path, a :class:`Spec` or a mapping of its sections) with the typed
    overrides ``sections`` merged in (:func:`autocompress.spec.merge_sections`: e.g.
    ``budget={"max_full_evaluations": 3}`` or ``budget=BudgetSpec(max_full_evaluations=3)``),
    validated; raises :class:`autocompress.errors.SpecError` listing every problem."""
    return _checked(spec, (), sections, None, check_paths)[0]


def draw_report(run_dir: PathLike, say: Say = log_info) -> Path | None:
    """report.html and its PNGs, unless the run's spec says ``output.report: false``; a report
    that cannot be drawn (no baseline measured yet) is logged, never raised."""
    from autocompress.engine import RunStore
    from autocompress.report import build_report

    try:
        with RunStore.open_reader(run_dir) as store:
            if not (store.meta("spec").get("output") or {}).get("report", True):
                return None
        return Path(build_report(run_dir))
    except Exception as error:  # e.g. no baseline measured yet
        say(f"note: no report ({type(error).__name__}: {error}); `autocompress report {run_dir}` retries")
        return None


@contextmanager
def _interruptible(run_dir: Path) -> Iterator[None]:
    """Ctrl-C in a search or resume raises :class:`SearchInterrupted`, naming the run directory."""
    try:
        yield
    except SearchInterrupted:
        raise
    except KeyboardInterrupt:
        raise SearchInterrupted(run_dir) from None


class Run:
    """A run directory: its search's results, read afresh from the run store at each access
    (a search running in another process is seen as it goes)."""

    def __init__(self, run_dir: PathLike) -> None:
        from autocompress.engine import RunStore

        self.run_dir = Path(run_dir).resolve()
        RunStore.open_reader(self.run_dir).close()  # a clear error for a folder that is not a run directory

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    def document(self) -> dict[str, Any]:
        """pareto.json's document, as of now (format ``autocompress-pareto-v1``)."""
        from autocompress.engine import RunStore, pareto_document

        with RunStore.open_reader(self.run_dir) as store:
            return pareto_document(store)

    @property
    def pareto(self) -> list[Point]:
        """The Pareto front of the fully evaluated candidates (bytes against accuracy, and energy
        or latency where the constraints limit them); ``feasible`` says which meet every
        constraint, ``recommended`` which one the run recommends."""
        document = self.document()
        return [Point.from_dict(p, document["best"]) for p in document["points"]]

    @property
    def near_misses(self) -> list[Point]:
        """When no point is feasible, the candidates nearest to the constraints (for recovery
        fine-tuning); empty otherwise."""
        document = self.document()
        return [Point.from_dict(p, document["best"]) for p in document["near_misses"]]

    @property
    def best(self) -> Point | None:
        """The recommended point (chosen on the held-out split when the run holds one out), or
        None when no point is feasible."""
        document = self.document()
        return next((Point.from_dict(p, document["best"]) for p in document["points"]
                     if p["id"] == document["best"]), None)

    def point(self, point_id: str) -> Point:
        """A fully evaluated point by id (Pareto point or near miss)."""
        document = self.document()
        for entry in document["points"] + document["near_misses"]:
            if entry["id"] == point_id:
                return Point.from_dict(entry, document["best"])
        front = ", ".join(p["id"] for p in document["points"]) or "none yet"
        raise UserInputError(f"point {point_id!r}: not a Pareto point or near miss of {self.run_dir}; "
                             f"the Pareto points are: {front}")

    def status(self) -> RunStatus:
        """The run's state and progress (``autocompress status``)."""
        from autocompress.engine import run_status

        report = run_status(self.run_dir)
        progress = report["progress"]
        return RunStatus(run_dir=self.run_dir, state=report["state"], stopped_by=report.get("stopped_by"),
                         full_evaluations=progress["full_evaluations"],
                         max_full_evaluations=progress.get("max_full_evaluations"),
                         best=(report.get("best") or {}).get("id"), details=report)

    def resume(self, *, max_full_evaluations: int | None = None, max_hours: float | None = None,
               finish: bool = False, workers: int | None = None, ray_address: str | None = None,
               limits: Limits | None = None, data_roots: list[str] | None = None, on_progress: Callable[[Progress], None] | None = None,
               say: Say = log_info) -> Run:
        """Continue the search (after a kill, an interrupt, or with a raised budget; recorded
        results are reused), or with ``finish`` end it now with what it has. The other
        arguments are :func:`search`'s. Returns self."""
        from autocompress.engine import RunOptions, RunStore, resume_search

        if finish:
            if max_full_evaluations is not None:
                raise UserInputError("finish ends the search at the full evaluations it has; "
                                     "give no max_full_evaluations with it")
            with RunStore.open_reader(self.run_dir) as store:
                max_full_evaluations = max(1, store.counts()["full"])
        options = RunOptions(workers=workers, ray_address=ray_address, max_full_evaluations=max_full_evaluations,
                             max_hours=max_hours, data_roots=data_roots, limits=limits)
        with _interruptible(self.run_dir):
            resume_search(self.run_dir, options=options, say=say, on_progress=on_progress,
                          on_end=lambda run_dir: draw_report(run_dir, say))
        return self

    def export(self, point: str | Point | None = None, path: PathLike | None = None, *, tuned: bool = False,
               say: Say = log_info) -> Exported:
        """Write a point's packed model (safetensors; the recommended point by default) to
        ``path`` (default: ``<run_dir>/exports/<id>[-tuned].safetensors``); ``tuned``: its
        fine-tuned model (:meth:`finetune`)."""
        from autocompress.engine import export_point

        point_id = self._point_id(point)
        if path is None:
            out = self.run_dir / "exports" / f"{point_id}{'-tuned' if tuned else ''}.safetensors"
            out.parent.mkdir(exist_ok=True)
        else:
            out = Path(path)
        written = export_point(self.run_dir, point_id, out, say=say, tuned=tuned)
        return Exported(path=Path(written["path"]), point=point_id, file_bytes=written["file_bytes"],
                        memory_bytes=written["memory_bytes"], accuracy=written.get("accuracy"), tuned=tuned,
                        details=written)

    def finetune(self, point: str | Point | list[str | Point] | None = None,
                 settings: Mapping[str, Any] | Any | None = None, *, workers: int | None = None,
                 ray_address: str | None = None, restart: bool = False, limits: Limits | None = None,
                 overrides: Sequence[str] = (), data_roots: list[str] | None = None, progress: bool = False,
                 say: Say = log_info) -> list[Tuned]:
        """Recovery fine-tuning (QAT with distillation) of ``point`` (one or a list; default:
        the spec's ``finetune.points``, the best point and the near misses). ``settings``:
        a :class:`~autocompress.spec.FinetuneSpec` or a mapping of its fields, over the
        run's ``finetune`` section (``overrides``: the CLI's ``--set finetune.KEY=VALUE``
        strings). A killed fine-tuning resumes from its last epoch; ``restart`` starts over."""
        from autocompress.engine.finetune import finetune as run_finetune

        points = None if point is None else [self._point_id(p) for p in (point if isinstance(point, list) else [point])]
        entries = run_finetune(self.run_dir, points, overrides=overrides,
                               sections={"finetune": settings} if settings is not None else None, workers=workers,
                               address=ray_address, restart=restart, confine=data_roots, say=say, progress=progress,
                               limits=limits)
        return [Tuned(point=e["id"], accuracy_before=e["accuracy_before"], accuracy=e["accuracy"],
                      accuracy_drop=e["accuracy_drop"], feasible_before=bool(e["feasible_before"]),
                      feasible=bool(e["feasible"]), memory_bytes=e["memory_bytes"], file=self.run_dir / e["file"],
                      holdout=e.get("holdout"), details=e) for e in entries]

    def report(self) -> Path:
        """Write report.html (plots embedded) and its PNGs into the run directory."""
        from autocompress.report import build_report

        try:
            return Path(build_report(self.run_dir))
        except ValueError as error:
            raise UserInputError(str(error)) from None

    def _point_id(self, point: str | Point | None) -> str:
        if isinstance(point, Point):
            return point.id
        if point is not None:
            return point
        best = self.document()["best"]
        if best is None:
            raise UserInputError(f"{self.run_dir}: no recommended point (none feasible); name one of the Pareto "
                                 "points or near misses")
        return best


def open_run(run_dir: PathLike) -> Run:
    """The :class:`Run` of an existing run directory."""
    return Run(run_dir)


def _checked(spec: Any, overrides: Sequence[str], sections: Mapping[str, Any], data_roots: list[str] | None,
             check_paths: bool = True) -> tuple[Spec, str | None]:
    """The validated spec and the file it came from; a :class:`Spec` with nothing to change
    is taken as it is (it was validated when it was made)."""
    from autocompress.spec import Spec, apply_overrides, load_spec

    if isinstance(spec, (str, os.PathLike)):
        return (load_spec(spec, overrides=overrides, sections=sections, confine=data_roots, check_paths=check_paths),
                str(Path(spec).resolve()))
    if isinstance(spec, Spec) and not overrides and not sections and data_roots is None:
        return spec, None
    data, base, source = _spec_data(spec)
    data = apply_overrides(data, overrides) if overrides else data
    data = merge_sections(data, sections) if sections else data
    return validate_spec(data, base_dir=base, source=source, confine=data_roots, check_paths=check_paths), None


def search(spec: Any, *, run_dir: PathLike | None = None, workers: int | None = None,
           ray_address: str | None = None, max_full_evaluations: int | None = None, max_hours: float | None = None,
           overrides: Sequence[str] = (), limits: Limits | None = None, data_roots: list[str] | None = None,
           on_progress: Callable[[Progress], None] | None = None, say: Say = log_info, **sections: Any) -> Run:
    """Search a spec's space to the end of its budget and return its :class:`Run`.

    ``spec``: a spec file, a :class:`~autocompress.spec.Spec` or a mapping of its sections;
    ``sections``: typed overrides of its sections (``budget={"max_full_evaluations": 3}``,
    ``strategy={"name": "tpe", "seed": 1}``, ``data=DataSpec(...)``); ``overrides``: the
    CLI's ``--set KEY.PATH=VALUE`` strings, applied first. ``workers``, ``ray_address``,
    ``max_full_evaluations``, ``max_hours`` override the execution and budget for this
    session; ``limits``: the caps (:class:`~autocompress.limits.Limits`); ``data_roots``:
    folders every spec path must stay in. ``on_progress`` gets a
    :class:`~autocompress.engine.progress.Progress` after each completed task. Every result
    is stored as it completes; Ctrl-C raises :class:`~autocompress.errors.SearchInterrupted`
    (a KeyboardInterrupt naming the run directory) and :meth:`Run.resume` goes on. The report
    is drawn as ``output.report`` says (default: yes)."""
    from autocompress.engine import RunOptions, start_search

    checked, spec_file = _checked(spec, overrides, sections, data_roots)
    options = RunOptions(workers=workers, ray_address=ray_address, max_full_evaluations=max_full_evaluations,
                         max_hours=max_hours, data_roots=data_roots, limits=limits)
    target = Path(run_dir if run_dir is not None else str(checked.output.run_dir)).resolve()
    say(f"run directory: {target}")
    with _interruptible(target):
        start_search(checked, run_dir=target, options=options, spec_file=spec_file, say=say,
                     on_progress=on_progress, on_end=lambda folder: draw_report(folder, say))
    return Run(target)


def evaluate(spec: Any, model: SViT | PathLike | None = None, *,
             split: Literal["all", "selection", "holdout"] = "all", progress: bool = False, say: Say = log_info,
             **sections: Any) -> Evaluation:
    """Top-1 accuracy of ``model`` (an :class:`~autocompress.models.SViT`, the path of an
    exported one, or None: the spec's own uncompressed model) on the spec's validation
    images: ``all`` of them, the ``selection`` split a search decides on, or the
    ``holdout`` split it reports."""
    from autocompress.compress import footprint, load_compressed
    from autocompress.engine import Session

    checked = validate(spec, **sections)
    if split != "all" and not checked.data.validation.holdout:
        raise UserInputError(f"split {split!r}: the spec holds no validation images out "
                             "(data.validation.holdout is 0), so every image is in one split: use split='all'")
    session = Session.open(checked, progress=progress, say=say)
    for note in session.data.notes:
        say(f"note: {note}")
    loaded = load_compressed(model) if isinstance(model, (str, os.PathLike)) else model
    if loaded is not None:
        loaded = loaded.to(session.device)
    indices = {"all": None, "selection": session.evaluation_order(), "holdout": session.holdout_order()}[split]
    result = session.evaluate(loaded, indices=indices, progress=progress)
    return Evaluation(accuracy=result.accuracy, correct=result.correct, total=result.total, split=split,
                      footprint_bytes=session.footprint() if loaded is None else footprint(loaded),
                      seconds=result.seconds, device=str(session.device), skipped=list(result.skipped),
                      checkpoint=session.checkpoint, data=session.data.description)


def load(path: PathLike) -> SViT:
    """Load a model written by :meth:`Run.export` or ``autocompress export`` (safetensors;
    weights only, no pickle)."""
    from autocompress.compress import load_compressed

    return load_compressed(path)


__all__ = ["Evaluation", "Exported", "HeldOut", "Point", "Run", "RunStatus", "Tuned", "draw_report", "evaluate",
           "load", "open_run", "search", "validate"]
