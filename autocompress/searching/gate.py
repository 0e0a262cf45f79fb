"""The gate: only candidates whose drift is low enough get a full evaluation.

``threshold: <number>`` is fixed. ``threshold: auto`` is calibrated online: an
increasing isotonic fit of accuracy drop on drift (scikit-learn) over the candidates
evaluated so far marks those it predicts to break the accuracy limit clearly (by more
than ``1 + margin`` times the allowed drop); candidates at least as drifted as the least
drifted of those are rejected, but never below the largest drift at which an evaluated
candidate kept the limit, and the fit is never extrapolated. Until ``min_points``
candidates are evaluated, or while no clear violation is predicted, everything passes.

It leans open on purpose: what it rejects is never evaluated, so a too-strict gate can
never learn it was wrong. The rules tried before this one, and what they cost on the
digits model, are in experiments/digits/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class GateDecision:
    passed: bool
    reason: str
    threshold: float | None


def isotonic_drops(observed, at) -> list[float]:
    """The accuracy drop an increasing (isotonic) fit of drop on signal over ``observed``
    ``(signal, drop)`` pairs predicts at each of ``at`` (clipped to the observed range): the
    fit the gate's threshold and the strategies' drift-to-drop estimates share."""
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(increasing=True, out_of_bounds="clip").fit([s for s, _ in observed],
                                                                         [d for _, d in observed])
    return [float(p) for p in fit.predict(list(at))]


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
        drifts = sorted({d for d, _ in self.points})
        predicted = isotonic_drops(self.points, drifts)
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
