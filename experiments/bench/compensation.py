"""Post-training compensation on a reference model (``--data``): top-1 and drift of uniform
configurations, and the best feasible point of a greedy search at 40 full evaluations,
with each technique off and on, side by side.

    python experiments/bench/compensation.py [--budget 40] [--data digits|fashion_mnist]
        [--tables uniform,search,importance] [--keep DIR] [--write]

``--keep DIR`` saves each table in DIR: a later invocation with other ``--tables`` and the
same DIR shows the kept tables beside its own.

Techniques (``compression.*`` in the spec): ``fold_batchnorm`` (BatchNorm folded into
the layer before it; exact, so only the footprint changes), ``mse_clipping`` (each
channel's quantization range chosen to minimise its rounding error) and
``recalibrate_batchnorm`` (BatchNorm statistics re-estimated on the 64 calibration
images, from the training split, through the compressed spiking model),
``bias_correction`` (each quantized layer's bias corrected for the mean shift of its
output; off by default) and ``importance`` (which channels pruning removes: ``l2``, the
smallest filters; ``variance``, VBP, the default; ``activation``, the rate variance
weighted by the weights the channel feeds). Uniform
configurations: every channel group pruned at the same rate (L2) and every layer at the
same bit-width.
"""

from __future__ import annotations

import sys

from _results import DIGITS_SPEC, Keep, bench_spec, budget_arguments, publish, run_search, section
from autocompress.engine import Setup, Worker
from autocompress.spec import validate_spec

_OFF = {"fold_batchnorm": False, "mse_clipping": False, "recalibrate_batchnorm": False, "bias_correction": False,
        "importance": "l2"}
SETTINGS = {
    "plain (as before)": _OFF,
    "fold": {**_OFF, "fold_batchnorm": True},
    "fold + MSE clipping": {**_OFF, "fold_batchnorm": True, "mse_clipping": True},
    "fold + BN recalibration": {**_OFF, "fold_batchnorm": True, "recalibrate_batchnorm": True},
    "fold + clipping + recalibration": {**_OFF, "fold_batchnorm": True, "mse_clipping": True,
                                        "recalibrate_batchnorm": True},
    "fold + clipping + bias correction": {**_OFF, "fold_batchnorm": True, "mse_clipping": True,
                                          "bias_correction": True},
    "fold + clipping + recalibration + bias correction": {**_OFF, "fold_batchnorm": True, "mse_clipping": True,
                                                          "recalibrate_batchnorm": True, "bias_correction": True},
    "fold + clipping + recalibration, VBP importance (the defaults)": {
        **_OFF, "fold_batchnorm": True, "mse_clipping": True, "recalibrate_batchnorm": True, "importance": "variance"},
    "fold + clipping + recalibration, activation importance": {
        **_OFF, "fold_batchnorm": True, "mse_clipping": True, "recalibrate_batchnorm": True,
        "importance": "activation"},
}
PRUNE_ONLY = {"space.search": "prune", "space.granularity": "layer", "constraints.accuracy.max_drop": 3.0,
              "constraints.memory.min_saving": 0.3}


def with_options(spec, options: dict):
    data = spec.model_dump(mode="json")
    data["compression"] = options
    return validate_spec(data, base_dir=DIGITS_SPEC.parent)  # as run_search: the dumped spec holds absolute paths


def uniform_table(spec) -> list[str]:
    rows = {}
    configs = [(rate, bits) for rate in (0.0, 0.25, 0.5) for bits in (8, 4, 3, 2)]
    for label, options in SETTINGS.items():
        setup = Setup.open(with_options(spec, options), say=lambda _m: None)
        worker = Worker(setup.session, setup.groups)
        for rate, bits in configs:
            config = {"prune": {g.name: rate for g in setup.groups.groups if rate} if rate else {},
                      "bits": {u.name: bits for u in setup.space.units.values() if u.kind == "bits"}}
            memory, drift, _activity = worker.probe(config)
            accuracy = worker.full(config).accuracy
            rows.setdefault((rate, bits), []).append((accuracy, drift, memory))
        print(label, file=sys.stderr)
    lines = ["| prune | bits | " + " | ".join(f"{label}: top-1 % / drift" for label in SETTINGS) + " | bytes (plain / fold) |",
             "|---:|---:|" + "---:|" * (len(SETTINGS) + 1)]
    for (rate, bits), values in rows.items():
        cells = " | ".join(f"{a:.2f} / {d:.3f}" for a, d, _ in values)
        lines.append(f"| {rate:.0%} | {bits} | {cells} | {values[0][2]:,} / {values[1][2]:,} |")
    return lines


def search_table(spec, budget: int) -> list[str]:
    lines = ["| setting | best feasible bytes | saved | top-1 % | full evaluations |", "|---|---:|---:|---:|---:|"]
    for label, options in SETTINGS.items():
        run = run_search(spec, {"compression": options, "budget.max_full_evaluations": budget})
        best = run.best
        lines.append(f"| {label} | {best.memory_bytes:,} | {best.memory_saving:.1%} | {best.accuracy:.2f} | "
                     f"{run.full_evaluations} |" if best else f"| {label} | none | - | - | {run.full_evaluations} |")
        print(lines[-1], file=sys.stderr)
    return lines


def importance_table(spec, budget: int) -> list[str]:
    lines = ["| pruning importance | best feasible bytes | saved | top-1 % | full evaluations |",
             "|---|---:|---:|---:|---:|"]
    for importance in ("l2", "variance", "activation"):
        run = run_search(spec, {**PRUNE_ONLY, "compression.importance": importance,
                                "budget.max_full_evaluations": budget})
        best = run.best
        lines.append(f"| {importance} | {best.memory_bytes:,} | {best.memory_saving:.1%} | {best.accuracy:.2f} | "
                     f"{run.full_evaluations} |" if best else f"| {importance} | none | - | - | {run.full_evaluations} |")
        print(lines[-1], file=sys.stderr)
    return lines


TABLES = ("uniform", "search", "importance")


def main() -> int:
    args = budget_arguments(__doc__, tables=TABLES, keep=True)
    spec = bench_spec(args.data)
    split = "selection split" if spec.data.validation.holdout else "validation images"
    where = f"{spec.model.checkpoint} on {spec.data.dataset} (its {split})"
    keep = Keep(args.keep, args.data)
    builders = {
        "uniform": lambda: [f"Uniform configurations of {where}, each setting side by side:", "",
                            *uniform_table(spec), ""],
        "search": lambda: [f"Greedy on the spec (block granularity, {spec.constraints.accuracy.max_drop} points, at "
                           f"least {spec.constraints.memory.min_saving:.0%} saved), at most {args.budget} full "
                           "evaluations:", "", *search_table(spec, args.budget), ""],
        "importance": lambda: [f"Prune-only greedy (layer granularity, 3 points, at least 30 % saved), at most "
                               f"{args.budget} full evaluations, the compression defaults, by pruning importance:",
                               "", *importance_table(spec, args.budget)],
    }
    lines = []
    for table in TABLES:  # a table --tables leaves out is shown when --keep holds it from an earlier invocation
        budget = "" if table == "uniform" else f"-b{args.budget}"
        lines += keep(f"compensation{budget}-{table}", builders[table], mine=table in args.tables) or []
    name, title, command = section("compensation", "Post-training compensation", args.data)
    if set(args.tables) != set(TABLES):
        command = command.replace(" --write", f" --tables {','.join(args.tables)} --write")
    if args.keep:
        command = command.replace(" --write", " --keep DIR --write")
    publish(name, title, command, "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
