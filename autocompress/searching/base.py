"""The strategy contract: ask, tell, done. A strategy registers by name with its own
options model (the spec's ``strategy`` section); :mod:`autocompress.searching.conformance`
checks any registered strategy against this contract.

A strategy proposes :class:`~autocompress.searching.results.Request` s over a
:class:`~autocompress.searching.space.SearchSpace` and learns from the results told back.
Its state must follow from its seed and the results told, in order: replaying the
same results rebuilds the same strategy and the same next requests (the run store
relies on this to resume). It must tolerate requests that are never answered (the
run ended) and results it did not ask for in that order.

The *signal* a strategy ranks candidates by is the drift proxy when it is on, else
the measured accuracy drop (the driver turns probes into full evaluations then).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, Callable, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from autocompress.searching.results import Constraints, Request, Result
from autocompress.searching.space import Config, SearchSpace


class StrategyOptions(BaseModel):
    """The options every strategy takes; a strategy's own model adds ``name:
    Literal["<its name>"]`` and its settings. ``conformance_settings`` are the settings
    the conformance suite runs it with (small populations for its small synthetic space)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)
    conformance_settings: ClassVar[dict[str, Any]] = {}

    seed: Annotated[int, Field(ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")] = 0


_STRATEGIES: dict[str, tuple[type[Strategy], type[StrategyOptions]]] = {}


def register_strategy(name: str, options: type[StrategyOptions]) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: register a strategy under ``name`` with its options model."""
    declared = get_args(options.model_fields["name"].annotation) if "name" in options.model_fields else ()
    if declared != (name,):
        raise ValueError(f"{options.__name__} must declare name: Literal[{name!r}]")

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        _STRATEGIES[name] = (cls, options)
        return cls

    return decorate


def strategy_class(name: str) -> type[Strategy]:
    """The strategy registered under ``name``."""
    return _STRATEGIES[name][0]


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def strategy_options(name: str | None = None):
    """The options model of strategy ``name``; without a name, all of them, in registration order."""
    if name is None:
        return tuple(options for _, options in _STRATEGIES.values())
    return _STRATEGIES[name][1]


def create_strategy(options: StrategyOptions, space: SearchSpace, constraints: Constraints, *,
                    proxy: bool = True) -> Strategy:
    """Build the strategy a spec's ``strategy`` section names."""
    try:
        cls, _ = _STRATEGIES[options.name]
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
        # full evaluations the run has left, set by the search loop before each ask (None: not
        # known). It follows from the results told, so a resumed run sees the same values.
        self.full_left: int | None = None

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
        return result.evaluated and result.error is None and self.constraints.result_accuracy_ok(result)
