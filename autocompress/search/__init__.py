"""Search over compression candidates: the space, the strategies (ask/tell), the gate,
the loop, the executor-driving loop and the Pareto set. Pure logic: no torch, no Ray,
no files.
"""

from autocompress.search import strategies as _strategies  # noqa: F401  (registers them)
from autocompress.search.base import (
    Strategy,
    StrategyOptions,
    create_strategy,
    register_strategy,
    strategy_names,
    strategy_options,
)
from autocompress.search.early import (
    EarlyStopping,
    default_shard_images,
    drop_lower_bound,
    drop_upper_bound,
    pack,
    paired_counts,
    shard_bounds,
    unpack,
)
from autocompress.search.execution import Completion, LocalExecutor, describe, drive, execute
from autocompress.search.gate import Gate
from autocompress.search.loop import SearchLoop, SearchStats, Task, TaskOutcome
from autocompress.search.results import (
    Constraints,
    ParetoSet,
    Request,
    Result,
    best_feasible,
    hypervolume,
    pareto_front,
    pareto_set,
)
from autocompress.search.space import Candidate, Dimension, SearchSpace, SpaceDefinition, Unit
from autocompress.search.stops import StopReason

__all__ = [
    "Candidate",
    "Completion",
    "Constraints",
    "Dimension",
    "EarlyStopping",
    "Gate",
    "LocalExecutor",
    "ParetoSet",
    "Request",
    "Result",
    "SearchLoop",
    "SearchSpace",
    "SearchStats",
    "SpaceDefinition",
    "StopReason",
    "Strategy",
    "StrategyOptions",
    "Task",
    "TaskOutcome",
    "Unit",
    "best_feasible",
    "create_strategy",
    "default_shard_images",
    "describe",
    "drive",
    "drop_lower_bound",
    "drop_upper_bound",
    "execute",
    "hypervolume",
    "pack",
    "paired_counts",
    "pareto_front",
    "pareto_set",
    "shard_bounds",
    "register_strategy",
    "strategy_names",
    "strategy_options",
    "unpack",
]
