"""Why a search stopped: one vocabulary for the loop, the driver, the CLI and the service.

The value is what the run store, ``pareto.json`` and ``status --json`` record
(``statistics.stopped_by``), so the strings are part of the file formats; a failed
session records ``"error: <message>"``, which :meth:`StopReason.parse` reads as
:attr:`StopReason.ERROR`. The service shows a client the reason, never the message
behind an error (it may quote files): :meth:`StopReason.public`.
"""

from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    STRATEGY_FINISHED = "strategy finished"  # the strategy has nothing left to propose
    STRATEGY_ASKED_NOTHING = "strategy asked nothing"  # nothing in flight and nothing asked: ended, not spun
    FULL_BUDGET = "full-evaluation budget"  # budget.max_full_evaluations (probes counted at budget.probe_cost)
    PROBE_BUDGET = "probe budget"  # budget.max_probes
    TIME_BUDGET = "time budget"  # budget.max_hours
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM, a cancelled job; finished work is kept
    ERROR = "error"  # the session failed; the store keeps "error: <message>"

    @property
    def is_error(self) -> bool:
        return self is StopReason.ERROR

    @property
    def is_budget(self) -> bool:
        """Stopped by a budget the user set (raise it with ``resume``)."""
        return self in (StopReason.FULL_BUDGET, StopReason.PROBE_BUDGET, StopReason.TIME_BUDGET)

    @classmethod
    def parse(cls, text: str | None) -> StopReason | None:
        """The reason a recorded ``stopped_by`` names (None for none recorded). A text
        this version does not know (written by a newer one, or damaged) reads as an error."""
        if not text:
            return None
        if text == cls.ERROR or text.startswith(f"{cls.ERROR}:"):
            return cls.ERROR
        try:
            return cls(text)
        except ValueError:
            return cls.ERROR

    @classmethod
    def public(cls, text: str | None) -> str | None:
        """What a client of the service is shown: the reason, without an error's message."""
        reason = cls.parse(text)
        return None if reason is None else reason.value
