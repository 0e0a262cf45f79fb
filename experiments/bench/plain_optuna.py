"""What a user would write instead of autocompress: a plain Optuna loop over the same
search space, every trial a full evaluation.

One integer parameter per dimension of the spec's search space (the choice index,
ordered from the baseline to the most aggressive, as autocompress's own strategies
see it), the candidate built by the same ``build_candidate`` (same pruning, quantizers
and compensation) and evaluated on the same validation images; no proxy, no gate.
TPE minimises the footprint and NSGA-II maximises accuracy and minimises the footprint,
both with Optuna's constraints (``trial.set_constraint``: accuracy drop and memory saving). Optuna's
default sampler settings apply, as in a first script (TPE: 10 startup trials; NSGA-II:
population 50).

    python experiments/bench/plain_optuna.py [--sampler tpe|nsga2] [--seed 0] [--budget 40]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from _results import bench_spec, data_argument


@dataclass
class Trial:
    accuracy: float
    memory_bytes: int
    feasible: bool


def plain_optuna(spec, sampler: str, seed: int, budget: int, setup=None) -> list[Trial]:
    """``budget`` trials of a plain Optuna study over ``spec``'s search space, in order."""
    import optuna

    from autocompress.compress import footprint
    from autocompress.engine.pipeline import Setup, build_candidate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = setup or Setup.open(spec, say=lambda _m: None)
    items = setup.session.evaluation_order()  # what a search decides on: the selection split, if any
    baseline = setup.session.evaluate(indices=items).accuracy
    max_drop = spec.constraints.accuracy.max_drop
    if spec.constraints.accuracy.kind != "absolute":
        max_drop = baseline * max_drop / 100
    min_saving = spec.constraints.memory.min_saving or 0.0
    trials: list[Trial] = []

    def objective(trial):
        config = tuple(trial.suggest_int(dim.name, 0, len(dim.choices) - 1) for dim in setup.space.dims)
        model = build_candidate(setup.session, setup.groups, setup.space.candidate(config).to_dict())
        accuracy = setup.session.evaluate(model, indices=items).accuracy
        size = footprint(model)
        excess = (baseline - accuracy - max_drop, min_saving - (1 - size / setup.baseline_bytes))
        trial.set_constraint("accuracy", excess[0])  # feasible when <= 0
        trial.set_constraint("memory", excess[1])
        trials.append(Trial(accuracy, size, all(e <= 1e-9 for e in excess)))
        return size if sampler == "tpe" else (accuracy, size)

    if sampler == "tpe":
        study = optuna.create_study(direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=seed))
    elif sampler == "nsga2":
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.NSGAIISampler(seed=seed))
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    study.optimize(objective, n_trials=budget)
    return trials


def best_feasible(trials: list[Trial]) -> int | None:
    sizes = [t.memory_bytes for t in trials if t.feasible]
    return min(sizes) if sizes else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=40)
    data_argument(parser)
    args = parser.parse_args()
    trials = plain_optuna(bench_spec(args.data), args.sampler, args.seed, args.budget)
    for count in (20, 40, 80):
        if count <= len(trials):
            print(f"best feasible bytes after {count} trials: {best_feasible(trials[:count])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
