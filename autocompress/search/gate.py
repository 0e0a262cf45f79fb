"""The gate: only candidates whose drift is low enough get a full evaluation.

``threshold: <number>`` is fixed. ``threshold: auto`` is calibrated online from the
candidates fully evaluated so far. An increasing isotonic fit of accuracy drop on
drift (scikit-learn) marks the evaluated candidates it predicts to break the accuracy
limit clearly, by more than ``1 + margin`` times the allowed drop (four times it, by
default); candidates at least as drifted as the least drifted of those are rejected,
but never below the largest drift at which an evaluated candidate kept the limit. The
fit is not interpolated into drifts no candidate has been evaluated at: drop grows
convexly with drift, so a line from a good point to a collapsed one would reject
candidates that are fine (it did: it locked out every 4-bit candidate).

The gate leans open on purpose. A candidate it rejects is never evaluated, so a gate
that is too strict can never learn it was wrong, while letting an uncertain candidate
through costs one evaluation that sharpens the fit. Near the accuracy limit the drift
separates good from bad candidates only roughly: on the digits model the smallest
feasible point (1.11 points lost) drifted more than candidates that lost 3 to 4, and a
gate at twice the allowed drop rejected it, so greedy and beam ended 1.5 KB larger
than without the gate; at four times they reach the same point. Past the limit drops
climb steeply (most broken candidates lose tens of points), so the looser threshold
costs few evaluations. Until ``min_points`` candidates are evaluated, or while
the fit predicts no clear violation anywhere, everything passes.
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
    margin: float = 3.0  # reject where the fit predicts more than (1 + margin) x the allowed drop
    points: list[tuple[float, float]] = field(default_factory=list)  # (drift, accuracy drop), via observe()
    history: list[tuple[int, float | None]] = field(default_factory=list)  # (points seen, threshold)

    def current_threshold(self) -> float | None:
        """The threshold in force (None: everything passes)."""
        if self.threshold != "auto":
            return float(self.threshold)
        return self.history[-1][1] if self.history else None  # refitted once per observed point

    def _fit_threshold(self) -> float | None:
        """The auto threshold the observed points give (see the module docstring)."""
        if len(self.points) < self.min_points:
            return None
        from sklearn.isotonic import IsotonicRegression

        drifts = sorted({d for d, _ in self.points})
        fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(
            [d for d, _ in self.points], [a for _, a in self.points])
        predicted = fit.predict(drifts)
        limit = self.max_drop_points * (1 + self.margin)
        clear = [drift for drift, drop in zip(drifts, predicted) if drop > limit]
        if not clear:
            return None
        known_good = max((d for d, drop in self.points if drop <= self.max_drop_points), default=0.0)
        # reject at or beyond the least drifted candidate known to break the limit clearly;
        # the fit is not interpolated into drifts nobody has evaluated (the relation is
        # convex: interpolating between a good point and a collapsed one is pessimistic)
        return max(math.nextafter(min(clear), -math.inf), known_good)

    def decide(self, drift: float | None) -> GateDecision:
        if not self.enabled or drift is None:
            return GateDecision(True, "gate off", None)
        threshold = self.current_threshold()
        if threshold is None:
            why = (f"calibrating: {len(self.points)} of {self.min_points} evaluations"
                   if len(self.points) < self.min_points else "the fit predicts no clear accuracy violation yet")
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
        self.history.append((len(self.points), self._fit_threshold() if self.threshold == "auto" else float(self.threshold)))
