"""A search set up once, the same way wherever it is needed: session -> channel groups
-> search space; then (once the baseline accuracy is known) constraints -> gate ->
strategy. :func:`build_candidate` is the only place a candidate's model is built from
its config: the workers evaluate it, ``export`` writes it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from autocompress.compress import (
    GroupReport,
    compress_model,
    find_channel_groups,
    foldable_batchnorms,
    footprint,
    quantizable_layers,
)
from autocompress.compress.pruning import activity_statistics
from autocompress.console import log_info
from autocompress.engine.session import Session
from autocompress.engine.space_file import build_space
from autocompress.searching import Constraints, Gate, SearchSpace, Strategy, create_strategy

TRACE_IMAGES = 8  # calibration images a custom model's channel groups are traced and verified on


def channel_groups(session: Session) -> GroupReport:
    """The channel groups of the session's model, and the BatchNorms a candidate folds
    (checked exact on the same images)."""
    example = session.data.calibration[:TRACE_IMAGES].to(session.device)
    report = find_channel_groups(session.model, example=example)
    if session.spec.compression.fold_batchnorm:
        report.folds = foldable_batchnorms(session.model, example)
    return report


def build_candidate(session: Session, groups: GroupReport, config: Mapping):
    """The compressed model of a candidate config (``{"prune": {...}, "bits": {...}}``)."""
    options = session.spec.compression
    prune = dict(config.get("prune", {}))
    calibration = session.data.calibration.to(session.device)
    statistics = None
    if options.importance != "l2" and prune:  # the base model's spike rates: measured once per session
        if "activity" not in session.cache:
            session.cache["activity"] = activity_statistics(session.model, groups.groups, calibration)
        statistics = session.cache["activity"]
    return compress_model(session.model, prune=prune, bits=dict(config.get("bits", {})),
                          groups=groups, importance=options.importance, statistics=statistics, fold=groups.folds,
                          clip=options.mse_clipping, correct=calibration if options.bias_correction else None,
                          recalibrate=calibration if options.recalibrate_batchnorm else None)


def priced(session: Session, activity) -> dict:
    """The spikes and energy summary of ``activity`` (autocompress.proxy.energy), priced by
    the spec's ``energy`` section."""
    prices = session.spec.energy
    return activity.summary(prices.ac_pj, prices.mac_pj, prices.bit_aware)


@dataclass
class Setup:
    """What a search needs before its first evaluation."""

    session: Session
    groups: GroupReport
    space: SearchSpace
    baseline_bytes: int

    @classmethod
    def open(cls, spec, *, device: str | None = None, progress: bool = False,
             say: Callable[[str], None] = log_info) -> Setup:
        session = Session.open(spec, device=device, progress=progress, say=say)
        groups = channel_groups(session)
        space = build_space(spec, groups, quantizable_layers(session.model.net))
        return cls(session, groups, space, footprint(session.model))

    def plan(self, constraints: Constraints, *, proxy: bool) -> tuple[Gate, Strategy]:
        """The gate and the strategy of the spec, for these constraints."""
        spec = self.session.spec
        gate = Gate(spec.proxy.threshold, constraints.max_drop_points, enabled=proxy and spec.proxy.gate)
        return gate, create_strategy(spec.strategy, self.space, constraints, proxy=proxy)
