"""Evaluating candidates on a session's model and data, in this process."""

from __future__ import annotations

from autocompress.compress import compress_model, footprint
from autocompress.engine.evaluation import evaluate_accuracy
from autocompress.engine.session import Session
from autocompress.proxy import membrane_drift, record_potentials


class SessionEvaluator:
    """``probe``: build the compressed model, its footprint and drift (one calibration
    forward); ``full``: its top-1 accuracy on the validation set. The last built model
    is kept, so a probe followed by a full evaluation builds it once."""

    def __init__(self, session: Session, groups, *, proxy: bool = True):
        self.session = session
        self.groups = groups
        self.by_name = groups.by_name()
        self.proxy = proxy
        self.calibration = session.data.calibration.to(session.device)
        self._reference = None
        self._last: tuple[str, object] | None = None

    @property
    def reference(self):
        if self._reference is None:
            self._reference = record_potentials(self.session.model, self.calibration)
        return self._reference

    def build(self, candidate):
        if self._last is not None and self._last[0] == candidate.id:
            return self._last[1]
        model = compress_model(self.session.model, prune=dict(candidate.prune), bits=dict(candidate.bits),
                               groups=self.groups, importance="l2")
        self._last = (candidate.id, model)
        return model

    def probe(self, candidate) -> tuple[int, float | None]:
        model = self.build(candidate)
        drift = None
        if self.proxy:
            drift = membrane_drift(self.reference, model, self.calibration, self.by_name, model.pruned_channels)
        return footprint(model), drift

    def full(self, candidate) -> float:
        model = self.build(candidate)
        spec = self.session.spec
        return evaluate_accuracy(model, self.session.data, batch_size=spec.data.batch_size,
                                 workers=spec.data.workers, device=self.session.device).accuracy

    def baseline_accuracy(self) -> float:
        return self.session.evaluate().accuracy
