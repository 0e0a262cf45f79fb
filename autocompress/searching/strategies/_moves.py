"""What the strategies share: scoring one-notch moves (memory saved per unit of signal,
drift or accuracy drop, added), and predicting an accuracy drop from the signal."""

from __future__ import annotations

from autocompress.searching.gate import isotonic_drops
from autocompress.searching.results import Result

_EPSILON = 1e-6


def move_score(parent: Result, child: Result, signal, constraints=None) -> float:
    """Saving per unit of extra signal; a move that adds no signal scores its saving over
    epsilon (so free savings go first, the larger first); unknown scores last. The saving
    is the bytes saved; while ``constraints`` limit the energy and the parent misses that
    limit, the fraction of the baseline footprint saved plus the fraction of the baseline
    energy estimate saved (a pruning move that cuts spikes counts for both)."""
    child_signal, parent_signal = signal(child), signal(parent)
    if child.memory_bytes is None or child_signal is None or parent.memory_bytes is None:
        return float("-inf")
    saved = parent.memory_bytes - child.memory_bytes
    if (constraints is not None and constraints.max_energy_mj is not None and constraints.baseline_energy_mj
            and parent.energy_mj is not None and child.energy_mj is not None
            and parent.energy_mj > constraints.max_energy_mj):  # only while the energy limit is still missed
        saved = saved / constraints.baseline_bytes + (parent.energy_mj - child.energy_mj) / constraints.baseline_energy_mj
    added = max(child_signal - (parent_signal or 0.0), _EPSILON)
    return saved / added


def negligible(parent: Result, child: Result, constraints, share: float) -> bool:
    """The move saves less than ``share`` of the bytes still to save: to the memory goal
    while the parent misses it, else of the parent's footprint. A full evaluation costs the
    same whatever the move saves; a move this small (a classification head of a few
    thousand weights walked notch by notch) is worth one only once no larger move is left."""
    if share <= 0 or parent.memory_bytes is None or child.memory_bytes is None:
        return False
    goal = constraints.memory_goal_bytes() if constraints is not None else None
    gap = parent.memory_bytes - goal if goal is not None and parent.memory_bytes > goal else parent.memory_bytes
    return parent.memory_bytes - child.memory_bytes < share * gap


def baseline_result(baseline_bytes: int, energy_mj: float | None = None) -> Result:
    """The uncompressed model as a walk's starting point."""
    return Result(candidate_id="baseline", memory_bytes=baseline_bytes, memory_saving=0.0, drift=0.0,
                  accuracy_drop=0.0, feasible=None, energy_mj=energy_mj)


def predicted_drops(observed, signals) -> list[float] | None:
    """The accuracy drops an increasing (isotonic) fit over ``observed`` ``(signal, drop)``
    pairs predicts at ``signals``; None while the pairs hold fewer than two distinct
    signals (no fit yet)."""
    usable = [(s, d) for s, d in observed if s is not None]
    if len({s for s, _ in usable}) < 2:
        return None
    return isotonic_drops(usable, signals)
