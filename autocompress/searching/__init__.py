"""Search over compression candidates: the space, the strategies (ask/tell), the gate,
the loop, the executor-driving loop and the Pareto set. Pure logic: no torch, no Ray,
no files.
"""

from autocompress.searching import strategies as _strategies  # noqa: F401  (registers them)
from autocompress.searching.base import (
    Strategy,
    StrategyOptions,
    create_strategy,
    register_strategy,
    strategy_names,
    strategy_options,
)
from autocompress.searching.early import (
    EarlyStopping,
    default_shard_images,
    drop_upper_bound,
    feasible_cells,
    sequential_bounds,
    pack,
    paired_counts,
    shard_bounds,
    unpack,
)
from autocompress.searching.execution import Completion, LocalExecutor, describe, drive, execute
from autocompress.searching.gate import Gate
from autocompress.searching.loop import SearchLoop, SearchStats, Task, TaskOutcome
from autocompress.searching.results import (
    Constraints,
    ParetoSet,
    Request,
    Result,
    best_feasible,
    hypervolume,
    pareto_front,
    pareto_set,
)
from autocompress.searching.space import Candidate, Dimension, SearchSpace, SpaceDefinition, Unit
from autocompress.searching.stops import StopReason

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
    "feasible_cells",
    "sequential_bounds",
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
