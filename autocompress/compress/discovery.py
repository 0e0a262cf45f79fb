"""Finding a model's channel groups: by the per-block rules for the SpikingJelly
families (:mod:`~autocompress.compress.rules`), by tracing for ``custom`` models
(:mod:`~autocompress.compress.tracing`). A group can be verified: removing its channels
must give the same outputs as zeroing them in the full model
(:mod:`~autocompress.compress.verification`).
"""

from __future__ import annotations

from dataclasses import replace

from autocompress.compress.groups import GroupReport
from autocompress.compress.rules import structural_groups
from autocompress.compress.tracing import traced_groups
from autocompress.compress.verification import discover_carriers, verify_group


def find_channel_groups(model, *, residual: bool = True, verify: bool | None = None, example=None) -> GroupReport:
    """The channel groups of an :class:`~autocompress.models.SViT`.

    ``residual`` includes the residual-stream width (one group for the whole model).
    ``verify`` checks prune == mask for each group on ``example`` images and leaves out
    the groups that fail; by default it is on for ``custom`` models, whose groups come
    from tracing, and off for the SpikingJelly families, whose groups are checked by
    the test suite.
    """
    if model.family == "custom":
        report = traced_groups(model, example)
        verify = True if verify is None else verify
    else:
        report = GroupReport(structural_groups(model.net, residual=residual))
    if not residual:
        report.groups = [g for g in report.groups if g.kind != "residual"]
    if verify:
        kept = []
        for group in report.groups:
            reason = verify_group(model, group, example)
            if reason is None:
                if not group.carriers:  # traced: which neuron layers carry it, for the drift proxy
                    group = replace(group, carriers=discover_carriers(model, group, example))
                kept.append(group)
            else:
                report.rejected.append((group.name, reason))
        report.groups = kept
    return report
