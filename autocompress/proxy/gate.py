"""The gate: only candidates whose drift is low enough get a full evaluation.

``threshold: <number>`` is fixed. ``threshold: auto`` is calibrated online from the
candidates fully evaluated so far: an increasing isotonic fit of accuracy drop on
drift (scikit-learn) splits the evaluated drifts into those the fit keeps within the
allowed drop and those it puts beyond it. The threshold sits just below the smallest
drift known to break the limit: ``upper - margin * (upper - lower)``, where ``lower``
is the largest drift below ``upper`` that the fit keeps within the limit; and never
below the largest drift at which an evaluated candidate kept the limit. The gate is
optimistic on purpose: a candidate it rejects is never evaluated, so a gate that is too
strict can never learn it was wrong, while one that lets an uncertain candidate through
pays one evaluation and learns from it (each evaluation in the band between ``lower``
and ``upper`` narrows it). Until ``min_points`` candidates are evaluated, or while none
of them broke the accuracy limit, everything passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class GateDecision:
    passed: bool
    reason: str
    threshold: float | None


@dataclass
class Gate:
    threshold: float | str  # a number, or "auto"
    max_drop_points: float
    enabled: bool = True
    min_points: int = 5
    margin: float = 0.1
    points: list[tuple[float, float]] = field(default_factory=list)  # (drift, accuracy drop)
    history: list[tuple[int, float | None]] = field(default_factory=list)  # (points seen, threshold)

    def current_threshold(self) -> float | None:
        """The threshold in force (None: everything passes)."""
        if self.threshold != "auto":
            return float(self.threshold)
        if len(self.points) < self.min_points:
            return None
        from sklearn.isotonic import IsotonicRegression

        drifts = [d for d, _ in self.points]
        fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(drifts, [a for _, a in self.points])
        predicted = fit.predict(sorted(set(drifts)))
        within = [d for d, p in zip(sorted(set(drifts)), predicted) if p <= self.max_drop_points]
        beyond = [d for d, p in zip(sorted(set(drifts)), predicted) if p > self.max_drop_points]
        if not beyond:
            return None
        upper = min(beyond)
        lower = max((d for d in within if d < upper), default=0.0)
        # never below a drift that an evaluated candidate kept the limit at: near the
        # boundary the fit pools good and bad points, and the gate would otherwise
        # reject candidates less drifted than ones known to be fine
        known_good = max((d for d, drop in self.points if drop <= self.max_drop_points), default=0.0)
        return max(upper - self.margin * (upper - lower), known_good)

    def decide(self, drift: float | None) -> GateDecision:
        if not self.enabled or drift is None:
            return GateDecision(True, "gate off", None)
        threshold = self.current_threshold()
        if threshold is None:
            why = (f"calibrating: {len(self.points)} of {self.min_points} evaluations"
                   if len(self.points) < self.min_points else "no evaluated candidate has broken the accuracy limit yet")
            return GateDecision(True, f"pass ({why})", None)
        kind = "auto" if self.threshold == "auto" else "fixed"
        if drift <= threshold:
            return GateDecision(True, f"pass: drift {drift:.4g} <= {kind} threshold {threshold:.4g}", threshold)
        return GateDecision(False, f"fail: drift {drift:.4g} > {kind} threshold {threshold:.4g}", threshold)

    def observe(self, drift: float | None, accuracy_drop: float) -> None:
        """Learn from a fully evaluated candidate (auto threshold only)."""
        if drift is None or not math.isfinite(drift):
            return
        self.points.append((drift, accuracy_drop))
        self.history.append((len(self.points), self.current_threshold()))
