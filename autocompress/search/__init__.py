"""Search over compression candidates: space, strategies (ask/tell), loop, Pareto set.

Pure logic over candidates and results: no Ray, no files.
"""

from autocompress.search import strategies as _strategies  # noqa: F401  (registers them)
from autocompress.search.base import Strategy, create_strategy, register_strategy, strategy_names
from autocompress.search.loop import SearchLoop, SearchStats
from autocompress.search.results import Constraints, ParetoSet, Request, Result, pareto_front, pareto_set
from autocompress.search.space import Candidate, Dimension, SearchSpace, SpaceDefinition, Unit

__all__ = [
    "Candidate",
    "Constraints",
    "Dimension",
    "ParetoSet",
    "Request",
    "Result",
    "SearchLoop",
    "SearchSpace",
    "SearchStats",
    "SpaceDefinition",
    "Strategy",
    "Unit",
    "create_strategy",
    "pareto_front",
    "pareto_set",
    "register_strategy",
    "strategy_names",
]
