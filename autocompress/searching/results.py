"""What an evaluation returns, the constraints it is judged by, and the Pareto set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Stage = Literal["probe", "full"]


@dataclass(frozen=True)
class Request:
    """A strategy's request: ``probe`` (proxy only: drift and footprint) or ``full``
    (through the gate, then a full evaluation if it passes)."""

    candidate: Any  # Candidate
    stage: Stage = "full"
    config: tuple[int, ...] | None = None  # the strategy's own coordinates, echoed back


@dataclass
class Result:
    candidate_id: str
    memory_bytes: int | None = None
    memory_saving: float | None = None
    drift: float | None = None  # membrane-potential drift (None when the proxy is off)
    gate: Literal["pass", "fail", "off", "not asked"] = "not asked"
    gate_reason: str = ""
    accuracy: float | None = None  # top-1 percent, for fully evaluated candidates
    accuracy_drop: float | None = None  # points against the baseline
    feasible: bool | None = None
    seconds: float = 0.0
    error: str | None = None
    images: int | None = None  # validation images the accuracy is over (None: recorded before it was counted)
    early_stopped: bool = False  # validation stopped early: accuracy is an estimate over ``images`` images
    # early stopped: the bound that decided the stop (points): the drop is at least this when stopped as
    # infeasible, at most this when stopped as feasible (at evaluation.confidence)
    drop_bound: float | None = None
    stop: Literal["infeasible", "feasible"] | None = None  # the side a validation stopped on (kept once completed)
    positions: int | None = None  # stopped: positions of the validation order read (the rest are completed from there)
    correct: int | None = None  # stopped: images right among those read
    drop_low: float | None = None  # stopped: anytime-valid lower and upper bounds on the whole set's drop (points)
    drop_high: float | None = None
    # the paired comparison with the baseline over the ``images`` read: images the baseline got right and this
    # candidate wrong (worse), and the reverse (better); None where no per-image baseline was compared with
    worse: int | None = None
    better: int | None = None
    drop_upper: float | None = None  # the drop is at most this on fresh images, at constraints.accuracy.confidence
    # spikes and energy per image, counted on the calibration batch by the probe (autocompress.proxy.energy)
    energy_mj: float | None = None
    synops: float | None = None
    firing_rate: float | None = None
    rates: dict | None = None  # neuron layer -> firing rate
    latency_ms: float | None = None  # measured median latency at batch 1 (latency.measure)
    latency_batch_ms: float | None = None  # ... at latency.batch_size

    @property
    def evaluated(self) -> bool:
        return self.accuracy is not None

    @property
    def exact(self) -> bool:
        """Fully evaluated on every validation image (not stopped early, or completed since)."""
        return self.accuracy is not None and not self.early_stopped

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Constraints:
    """Feasibility: accuracy drop within the limit and memory within its limit(s)."""

    baseline_accuracy: float
    baseline_bytes: int
    max_drop_points: float  # absolute top-1 points
    min_saving: float | None = None
    max_bytes: int | None = None
    baseline_energy_mj: float | None = None  # per image (autocompress.proxy.energy)
    max_energy_mj: float | None = None  # the energy limit, from energy.max_mj or energy.min_saving
    max_latency_ms: float | None = None  # the latency limit at batch 1 (latency.measure)
    # accuracy feasibility is decided on the upper confidence bound of the drop at this level
    # (constraints.accuracy.confidence); None: on the measured drop (runs of versions before it)
    confidence: float | None = None

    @classmethod
    def from_spec(cls, constraints, baseline_accuracy: float, baseline_bytes: int,
                  baseline_energy_mj: float | None = None) -> Constraints:
        accuracy = constraints.accuracy
        points = accuracy.max_drop if accuracy.kind == "absolute" else baseline_accuracy * accuracy.max_drop / 100
        energy = getattr(constraints, "energy", None)
        limit = None
        if energy is not None:
            limits = [energy.max_mj] if energy.max_mj is not None else []
            if energy.min_saving is not None and baseline_energy_mj is not None:
                limits.append(baseline_energy_mj * (1 - energy.min_saving))
            limit = min(limits) if limits else None
        latency = getattr(constraints, "latency", None)
        return cls(baseline_accuracy, baseline_bytes, points, constraints.memory.min_saving, constraints.memory.max_bytes,
                   baseline_energy_mj, limit, None if latency is None else latency.max_ms,
                   getattr(accuracy, "confidence", None))

    def memory_goal_bytes(self) -> int | None:
        """The largest footprint the memory limit(s) allow; None without a memory limit."""
        goals = [self.max_bytes] if self.max_bytes is not None else []
        if self.min_saving is not None:
            goals.append(int(self.baseline_bytes * (1 - self.min_saving)))
        return min(goals) if goals else None

    def energy_ok(self, energy_mj: float | None) -> bool:
        """Within the energy limit (no limit: always; a limit and no figure: never)."""
        if self.max_energy_mj is None:
            return True
        return energy_mj is not None and energy_mj <= self.max_energy_mj * (1 + 1e-12)

    def memory_ok(self, memory_bytes: int) -> bool:
        if self.max_bytes is not None and memory_bytes > self.max_bytes:
            return False
        return self.min_saving is None or 1 - memory_bytes / self.baseline_bytes >= self.min_saving - 1e-12

    def drop_upper(self, worse: int | None, better: int | None, images: int | None) -> float | None:
        """The upper confidence bound on the drop that feasibility is decided on, from a
        paired comparison with the baseline; None without a confidence or a comparison."""
        if self.confidence is None or worse is None or better is None or not images:
            return None
        from autocompress.searching.early import drop_upper_bound

        return drop_upper_bound(worse, better, images, self.confidence)

    def decision_drop(self, result: Result) -> float:
        """The drop a fully evaluated result is judged by: its upper confidence bound where
        the run decides with confidence and the result has one, else its measured drop."""
        return result.drop_upper if result.drop_upper is not None else result.accuracy_drop

    def accuracy_ok(self, accuracy: float, drop_upper: float | None = None) -> bool:
        """Within the accuracy limit: the measured drop, or with ``drop_upper`` (a result
        compared image by image, decided with confidence) its upper confidence bound."""
        drop = drop_upper if drop_upper is not None else self.baseline_accuracy - accuracy
        return drop <= self.max_drop_points + 1e-9

    def result_accuracy_ok(self, result: Result) -> bool:
        """Whether an evaluated result is within the accuracy limit, as the search decides."""
        return self.accuracy_ok(result.accuracy, result.drop_upper)

    def latency_ok(self, latency_ms: float | None) -> bool:
        """Within the latency limit (no limit: always; a limit and no measurement: never)."""
        return self.max_latency_ms is None or (latency_ms is not None and latency_ms <= self.max_latency_ms)

    def feasible(self, accuracy: float, memory_bytes: int, energy_mj: float | None = None,
                 latency_ms: float | None = None, drop_upper: float | None = None) -> bool:
        return (self.accuracy_ok(accuracy, drop_upper) and self.memory_ok(memory_bytes) and self.energy_ok(energy_mj)
                and self.latency_ok(latency_ms))

    def objectives(self) -> tuple[str, ...]:
        """What the Pareto set minimises besides losing accuracy: memory, and each other
        quantity the constraints limit."""
        return (("memory_bytes",) + (("energy_mj",) if self.max_energy_mj is not None else ())
                + (("latency_ms",) if self.max_latency_ms is not None else ()))

    # How far from feasible: the one definition the near misses and the Optuna strategies use.

    def accuracy_excess(self, accuracy_drop: float) -> float:
        """Top-1 points lost beyond the limit (<= 0: within it)."""
        return accuracy_drop - self.max_drop_points

    def memory_excess(self, memory_bytes: int) -> float:
        """0 within every memory limit; otherwise the largest miss, as a fraction of the
        baseline footprint: saving still missing from ``min_saving``, or bytes over ``max_bytes``."""
        if self.memory_ok(memory_bytes):
            return 0.0
        misses = []
        if self.min_saving is not None:
            misses.append(self.min_saving - (1 - memory_bytes / self.baseline_bytes))
        if self.max_bytes is not None:
            misses.append((memory_bytes - self.max_bytes) / self.baseline_bytes)
        return max(misses)

    def shortfall(self, result: Result) -> float:
        """How far an evaluated result is from feasible, in units of each limit, summed."""
        accuracy = max(0.0, self.accuracy_excess(self.decision_drop(result))) / max(self.max_drop_points, 1e-9)
        memory_limit = self.min_saving if self.min_saving is not None else self.max_bytes / self.baseline_bytes
        others = 0.0  # energy and latency beyond their limits, each in units of its limit
        if self.max_energy_mj is not None and result.energy_mj is not None:
            others += max(0.0, result.energy_mj - self.max_energy_mj) / max(self.max_energy_mj, 1e-12)
        if self.max_latency_ms is not None and result.latency_ms is not None:
            others += max(0.0, result.latency_ms - self.max_latency_ms) / self.max_latency_ms
        return accuracy + self.memory_excess(result.memory_bytes) / max(memory_limit, 1e-9) + others


@dataclass
class ParetoSet:
    points: list[Result]  # non-dominated fully evaluated candidates, smallest memory first
    best: Result | None  # the best feasible point (smallest memory, ties to accuracy)
    hypervolume: float
    near_misses: list[Result] = field(default_factory=list)  # when nothing is feasible


def pareto_front(results: list[Result], objectives: tuple[str, ...] = ("memory_bytes",)) -> list[Result]:
    """Non-dominated exactly evaluated results over (accuracy up, memory down), smallest
    memory first (an early-stopped candidate's accuracy is an estimate: never a point).
    ``objectives``: more quantities to minimise (``energy_mj``, ``latency_ms``)."""
    if tuple(objectives) != ("memory_bytes",):
        return _front_n(results, tuple(objectives))
    evaluated = sorted(
        (r for r in results if r.exact and r.memory_bytes is not None),
        key=lambda r: (r.memory_bytes, -r.accuracy),
    )
    front: list[Result] = []
    for result in evaluated:
        if not front or result.accuracy > front[-1].accuracy:
            if front and result.memory_bytes == front[-1].memory_bytes:
                continue
            front.append(result)
    return front


def _front_n(results: list[Result], objectives: tuple[str, ...]) -> list[Result]:
    """Non-dominated over accuracy (up) and ``objectives`` (down; an unknown value counts
    as the worst), smallest memory first. Quadratic: a run has hundreds of points, not more."""
    evaluated = [r for r in results if r.exact and r.memory_bytes is not None]

    def values(r: Result) -> tuple[float, ...]:
        return (-r.accuracy, *(float("inf") if getattr(r, o) is None else getattr(r, o) for o in objectives))

    scored = [(values(r), r) for r in evaluated]
    front, seen = [], set()
    for mine, result in sorted(scored, key=lambda item: (item[1].memory_bytes, item[0])):
        if mine in seen or any(all(o <= m for o, m in zip(other, mine)) and other != mine for other, _ in scored):
            continue
        seen.add(mine)
        front.append(result)
    return front


def hypervolume(front: list[Result], constraints: Constraints) -> float:
    """Area dominated by the front in (memory saving, accuracy / baseline accuracy), both
    in [0, 1], against the reference point (0 saving, 0 accuracy): 1.0 would be a model
    of no size at the baseline's accuracy; the baseline itself scores 0. A baseline at 0 %
    (an untrained model, random data) makes every point's accuracy ratio 1."""
    area, best_accuracy = 0.0, 0.0
    for point in front:  # smallest memory (largest saving) first, accuracy rising
        saving = max(0.0, 1 - point.memory_bytes / constraints.baseline_bytes)
        accuracy = min(1.0, point.accuracy / constraints.baseline_accuracy) if constraints.baseline_accuracy > 0 else 1.0
        if accuracy > best_accuracy:
            area += saving * (accuracy - best_accuracy)
            best_accuracy = accuracy
    return area


def best_feasible(results) -> Result | None:
    """The best feasible evaluated result: smallest memory, ties to accuracy."""
    feasible = [r for r in results if r.exact and r.feasible]
    return min(feasible, key=lambda r: (r.memory_bytes, -r.accuracy)) if feasible else None


def pareto_set(results: list[Result], constraints: Constraints, near_misses: int = 5) -> ParetoSet:
    """The Pareto set of the fully evaluated results. When none is feasible, the near
    misses are the evaluated results with the smallest :meth:`Constraints.shortfall`."""
    front = pareto_front(results, constraints.objectives())
    best = best_feasible(results)
    misses: list[Result] = []
    if best is None:
        misses = sorted((r for r in results if r.exact), key=constraints.shortfall)[:near_misses]
    return ParetoSet(points=front, best=best, hypervolume=hypervolume(front, constraints), near_misses=misses)
