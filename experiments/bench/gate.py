"""The proxy's two jobs, measured apart: ranking (probes order the candidates) and
gating (the gate turns candidates away), at one full-evaluation budget, per strategy;
and what the gate hid.

Each strategy runs three times on a reference model (``--data``: digits or the
Fashion-MNIST reference, on its selection half; block granularity, the
same seed and budget): the proxy ranking and the gate on (the default), the proxy
ranking with the gate off (``proxy.gate: false``), and no proxy at all (candidates
ranked by measured accuracy, every probe a full evaluation). Then every candidate the
gate turned away in the first run is validated in full after the fact: how many were
feasible, and how many would have been the best feasible point so far at the moment
the gate rejected them (the gate "hid" them). Probes are counted, and the wall time of
each run is printed beside the full evaluations.

    python experiments/bench/gate.py [--strategies greedy beam ...] [--budget 40]
        [--data digits|fashion_mnist] [--write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _results import DATA, bench_spec, data_argument, overridden, publish, section
from autocompress.searching import strategy_names
from autocompress.spec import validate_spec

MODES = (("ranking + gate", {}), ("ranking only", {"proxy.gate": False}), ("no proxy", {"proxy.enabled": False}))


def search(spec, overrides: dict, base_dir: Path):
    """Run the spec with ``overrides``; the pareto document and every journal record, in order."""
    from autocompress.engine import RunStore, start_search

    data = overridden(spec, overrides)
    with tempfile.TemporaryDirectory(prefix="autocompress-gate-") as folder:
        data["output"]["run_dir"] = str(Path(folder) / "run")
        start = time.perf_counter()
        document = start_search(validate_spec(data, base_dir=base_dir), say=lambda _m: None)
        seconds = time.perf_counter() - start
        with RunStore.open_reader(Path(folder) / "run") as store:
            records = store.records()
            constraints = store.constraints()
    return document, records, constraints, seconds


def best_bytes(document) -> int | None:
    best = next((p for p in document["points"] if p["id"] == document["best"]), None)
    return best["memory_bytes"] if best else None


def audit(records, constraints, worker) -> tuple[int, int, int]:
    """(gated out, feasible among them, hidden: feasible and smaller than the best feasible point so far)."""
    best = None
    gated = feasible = hidden = 0
    seen: set[str] = set()
    for record in records:
        result = record.result
        if record.kind == "full" and result.feasible and result.exact:
            best = result.memory_bytes if best is None else min(best, result.memory_bytes)
        elif record.kind == "gate" and result.candidate_id not in seen:
            seen.add(result.candidate_id)
            gated += 1
            accuracy = worker.full(record.candidate).accuracy
            if constraints.feasible(accuracy, result.memory_bytes):
                feasible += 1
                hidden += best is None or result.memory_bytes < best
    return gated, feasible, hidden


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=strategy_names())
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    data_argument(parser)
    args = parser.parse_args()
    from autocompress.engine.pipeline import Setup
    from autocompress.engine.worker import Worker

    spec = bench_spec(args.data)
    base_dir = DATA[args.data][0].parent
    setup = Setup.open(spec, say=lambda _m: None)
    worker = Worker(setup.session, setup.groups)
    lines = ["| strategy | proxy | best feasible bytes | full evaluations | probes | gated out | wall s | "
             "gated candidates feasible after all | of them hidden bests |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    totals = [0, 0, 0]
    for name in args.strategies:
        for mode, overrides in MODES:
            document, records, constraints, seconds = search(spec, {
                "strategy": {"name": name, "seed": args.seed}, "budget.max_full_evaluations": args.budget,
                **overrides}, base_dir)
            stats = document["statistics"]
            best = best_bytes(document)
            gated = feasible = hidden = "-"
            if mode == "ranking + gate":
                gated, feasible, hidden = audit(records, constraints, worker)
                totals = [t + v for t, v in zip(totals, (gated, feasible, hidden))]
            lines.append(f"| {name} | {mode} | {f'{best:,}' if best else 'none'} | {stats['full_evaluations']} | "
                         f"{stats['proxy_evaluations']} | {stats['gated_out']} | {seconds:.0f} | {feasible} | "
                         f"{hidden} |")
            print(lines[-1], file=sys.stderr, flush=True)
    summary = (f"Over every strategy, the gate turned away {totals[0]} distinct candidates; validated afterwards, "
               f"{totals[1]} of them were feasible and {totals[2]} would have been the best feasible point so far "
               "when it rejected them.")
    header = (f"{spec.model.checkpoint} on {spec.data.dataset} (the selection split), block granularity, constraints <= {spec.constraints.accuracy.max_drop} "
              f"points, >= {spec.constraints.memory.min_saving:.0%} saved; budget {args.budget} full evaluations, "
              f"seed {args.seed}. \"ranking only\": the drift ranks and the gate rejects nothing; \"no proxy\": "
              "ranked by measured accuracy, every probe a full evaluation.")
    body = "\n".join([header, "", *lines, "", summary])
    name, title, command = section("gate", "Proxy ranking vs gating, and what the gate hid", args.data)
    if args.strategies != strategy_names():
        command = command.replace(" --write", f" --strategies {' '.join(args.strategies)} --write")
    command = command.replace(" --write", f" --budget {args.budget} --write")
    publish(name, title, command, body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
