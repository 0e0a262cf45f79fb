"""Kill a search with SIGKILL mid-way, resume it, and compare with an uninterrupted run.

    python experiments/engine/kill_and_resume.py [--spec SPEC] [--kill-after N] [--workers W] [--budget B]
        [--stopped-on-both-sides] [--set KEY=VALUE ...] [--json]

Runs `autocompress search` twice on the same spec (same strategy and seed): once to
the end, once killed with SIGKILL after N full evaluations are stored (and, with
--stopped-on-both-sides, once validations stopped early as infeasible and as feasible
are among them) and then continued with `autocompress resume`. Prints both Pareto sets
and checks that they are the same, that the journals are (every full evaluation in
order: id, accuracy, images, the side it stopped on, whether it is still an estimate),
that the store holds no candidate fully evaluated twice, and that the resumed run spent
the same number of full evaluations. Exit status 0 when all hold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPEC = ROOT / "experiments" / "digits" / "spec.yaml"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autocompress", *args]


def _stored_fulls(run_dir: Path) -> int:
    db = run_dir / "store.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM evaluations WHERE kind = 'full'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


def _front(run_dir: Path) -> list[tuple]:
    document = json.loads((run_dir / "pareto.json").read_text())
    return [(p["id"], round(p["accuracy"], 6), p["memory_bytes"], p["feasible"]) for p in document["points"]]


def _early_stopped(run_dir: Path) -> list[tuple]:
    document = json.loads((run_dir / "pareto.json").read_text())
    return [(p["id"], p.get("side"), p["images"], round(p["accuracy_drop_at_least"], 6))
            for p in document.get("early_stopped", [])]


def _journal(run_dir: Path) -> list[tuple]:
    """Every full evaluation in journal order: id, top-1 %, images, the side it stopped on, still an estimate."""
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT candidate_id, accuracy, images, stop, early_stopped FROM evaluations "
                                  "WHERE kind = 'full' ORDER BY seq").fetchall()
    return [(cid, None if accuracy is None else round(accuracy, 6), images, stop, bool(estimate))
            for cid, accuracy, images, stop, estimate in rows]


def _stopped_sides(run_dir: Path) -> set[str]:
    db = run_dir / "store.sqlite"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return {side for (side,) in connection.execute(
                "SELECT DISTINCT stop FROM evaluations WHERE kind = 'full' AND early_stopped = 1")}
    except sqlite3.OperationalError:
        return set()


def _duplicates(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT candidate_id, COUNT(*) FROM evaluations WHERE kind = 'full' "
                                  "GROUP BY candidate_id HAVING COUNT(*) > 1").fetchall()


def kill_and_resume(spec: Path, workdir: Path, *, kill_after: int, workers: int, budget: int,
                    overrides: tuple[str, ...] = (), both_sides: bool = False, say=print) -> dict:
    common = ["--workers", str(workers), "--max-full-evaluations", str(budget)]
    for item in overrides:
        common += ["--set", item]
    whole, killed = workdir / "uninterrupted", workdir / "killed"
    say(f"uninterrupted run -> {whole}")
    subprocess.run(_cli("search", str(spec), "--run-dir", str(whole), *common), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    say(f"run to kill -> {killed} (SIGKILL after {kill_after} stored full evaluations)")
    process = subprocess.Popen(_cli("search", str(spec), "--run-dir", str(killed), *common),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    def ready() -> bool:
        return _stored_fulls(killed) >= kill_after and (
            not both_sides or _stopped_sides(killed) >= {"infeasible", "feasible"})

    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"the search ended (exit {process.returncode}) before {kill_after} full evaluations"
                               + (" with validations stopped early on both sides" if both_sides else ""))
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and anything it started, no chance to clean up
    process.wait()
    at_kill = _stored_fulls(killed)
    sides_at_kill = sorted(_stopped_sides(killed))
    journal_at_kill = _journal(killed)
    say(f"killed with {at_kill} full evaluations stored ({', '.join(sides_at_kill) or 'none'} stopped early); resuming")
    subprocess.run(_cli("resume", str(killed)), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    expected, got = _front(whole), _front(killed)
    report = {
        "full_evaluations_at_kill": at_kill,
        "full_evaluations": {"uninterrupted": _stored_fulls(whole), "killed_and_resumed": _stored_fulls(killed)},
        "pareto_uninterrupted": expected,
        "pareto_resumed": got,
        "same_pareto_set": expected == got,
        "early_stopped_uninterrupted": _early_stopped(whole),
        "early_stopped_resumed": _early_stopped(killed),
        "duplicate_full_evaluations": _duplicates(killed),
        "stopped_sides_at_kill": sides_at_kill,
        "estimates_at_kill": sum(estimate for *_, estimate in journal_at_kill),
        "journal_uninterrupted": _journal(whole),
        "journal_resumed": _journal(killed),
    }
    report["same_journal"] = report["journal_uninterrupted"] == report["journal_resumed"]
    report["ok"] = (report["same_pareto_set"] and report["same_journal"] and not report["duplicate_full_evaluations"]
                    and report["early_stopped_uninterrupted"] == report["early_stopped_resumed"]
                    and report["full_evaluations"]["uninterrupted"] == report["full_evaluations"]["killed_and_resumed"])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEMO_SPEC)
    parser.add_argument("--kill-after", type=int, default=10, help="full evaluations stored before the kill")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--budget", type=int, default=60, help="budget.max_full_evaluations of both runs")
    parser.add_argument("--keep", type=Path, help="keep the two run directories here")
    parser.add_argument("--stopped-on-both-sides", action="store_true",
                        help="kill only once validations stopped early as infeasible and as feasible are stored")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a spec override for both runs (as `autocompress search --set`)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="autocompress-kill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = kill_and_resume(args.spec, workdir, kill_after=args.kill_after, workers=args.workers, budget=args.budget,
                             overrides=tuple(args.overrides), both_sides=args.stopped_on_both_sides,
                             say=(lambda _m: None) if args.json else print)
    if args.json:
        print(json.dumps(report))
        return 0 if report["ok"] else 1
    print(f"full evaluations: uninterrupted {report['full_evaluations']['uninterrupted']}, killed at "
          f"{report['full_evaluations_at_kill']} and resumed {report['full_evaluations']['killed_and_resumed']}")
    print("Pareto set (id, top-1 %, bytes, feasible):")
    for a, b in zip(report["pareto_uninterrupted"], report["pareto_resumed"]):
        print(f"  uninterrupted {a}   resumed {b}")
    if len(report["pareto_uninterrupted"]) != len(report["pareto_resumed"]):
        print(f"  sizes differ: {len(report['pareto_uninterrupted'])} vs {len(report['pareto_resumed'])}")
    print(f"early stopped (id, side, images, drop at least): uninterrupted {report['early_stopped_uninterrupted']}, "
          f"resumed {report['early_stopped_resumed']}")
    print(f"stopped early when killed: {', '.join(report['stopped_sides_at_kill']) or 'none'} "
          f"({report['estimates_at_kill']} estimates stored); same journal: {report['same_journal']}")
    print(f"same Pareto set: {report['same_pareto_set']}; candidates fully evaluated twice: "
          f"{report['duplicate_full_evaluations'] or 'none'}")
    print("OK" if report["ok"] else "MISMATCH")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
