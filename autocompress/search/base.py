"""The strategy contract: ask, tell, done. Strategies register by name.

A strategy proposes :class:`~autocompress.search.results.Request` s over a
:class:`~autocompress.search.space.SearchSpace` and learns from the results told back.
Its state must follow from its seed and the results told, in order: replaying the
same results rebuilds the same strategy and the same next requests (the run store
relies on this to resume). It must tolerate requests that are never answered (the
run ended) and results it did not ask for in that order.

The *signal* a strategy ranks candidates by is the drift proxy when it is on, else
the measured accuracy drop (the driver turns probes into full evaluations then).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

from autocompress.search.results import Constraints, Request, Result
from autocompress.search.space import Config, SearchSpace

_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorate


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def create_strategy(options, space: SearchSpace, constraints: Constraints, *, proxy: bool = True) -> Strategy:
    """Build the strategy a spec's ``strategy`` section names."""
    try:
        cls = _STRATEGIES[options.name]
    except KeyError:
        raise ValueError(f"unknown strategy {options.name!r}; known: {', '.join(strategy_names())}") from None
    return cls(space, options, constraints, proxy=proxy)


class Strategy(ABC):
    name: ClassVar[str]

    def __init__(self, space: SearchSpace, options, constraints: Constraints, *, proxy: bool = True):
        self.space = space
        self.options = options
        self.constraints = constraints
        self.proxy = proxy
        self.seed = options.seed

    def signal(self, result: Result) -> float | None:
        """What moves are ranked by: the drift, or the accuracy drop without a proxy."""
        return result.drift if self.proxy else result.accuracy_drop

    def request(self, config: Config, stage: str = "full") -> Request:
        return Request(self.space.candidate(config), stage, config)

    @abstractmethod
    def ask(self, n: int) -> list[Request]:
        """Up to ``n`` requests (fewer when the strategy waits for results; none when done)."""

    @abstractmethod
    def tell(self, request: Request, result: Result) -> None:
        """The result of an earlier request."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True when the strategy has nothing left to propose."""

    def acceptable(self, result: Result) -> bool:
        """Whether a result may stand as a step of a walk: evaluated and accuracy-feasible."""
        return result.evaluated and result.error is None and self.constraints.accuracy_ok(result.accuracy)
