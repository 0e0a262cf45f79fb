"""The engine: replaying a journal, parallel completion, the run store, and the CLI
that drives searches (search, resume, status, pareto, export), with Ray and faults."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import autocompress
from autocompress.cli import main
from autocompress.engine import RunStore, Session
from autocompress.errors import UserInputError
from autocompress.searching import Result, TaskOutcome
from autocompress.searching.conformance import make_loop
from autocompress.spec import load_spec
from conftest import FIXTURES, HANG_GUARD, REPO, make_spec_data, wait_for, write_spec


# --------------------------------------------------------------------------- loop level
# (replaying a journal and completing in any order are conformance checks: test_strategies.py)


def test_a_failing_task_is_a_result_and_the_search_goes_on():
    loop = make_loop("random", max_full=6)
    failed = 0
    while not loop.finished:
        for task in loop.tasks(1):
            if task.stage == "full" and failed < 2:
                failed += 1
                loop.complete(task, TaskOutcome(error="RuntimeError: boom"))
            elif task.stage == "probe":
                # each proposal smaller than the last: random's dominance check never skips one
                loop.complete(task, TaskOutcome(memory_bytes=500_000 - 1_000 * task.key, drift=0.1 * task.key % 1))
            else:
                loop.complete(task, TaskOutcome(accuracy=89.5))
    assert loop.stats.failed == 2 and loop.stats.full_evaluations == 6
    assert sum(1 for r in loop.all_results() if r.error == "RuntimeError: boom") == 2


# --------------------------------------------------------------------------- the store


def test_store_lock_refuses_a_second_driver_and_lets_readers_in(tmp_path):
    store = RunStore.create(tmp_path / "run", {"spec": {"name": "x"}})
    store.begin_session("search", workers=0, executor="in-process", max_full_evaluations=5)
    with pytest.raises(UserInputError, match="in use by another autocompress driver .*`search`, pid"):
        RunStore.open_writer(tmp_path / "run")
    with pytest.raises(UserInputError, match="already holds a run; continue it with `autocompress resume"):
        RunStore.create(tmp_path / "run", {})
    store.record("full", {"prune": {}, "bits": {}}, Result("abc", memory_bytes=10, accuracy=1.0))
    with RunStore.open_reader(tmp_path / "run") as reader:  # while the writer holds the lock
        assert reader.counts()["full"] == 1 and reader.driver_alive()
        with pytest.raises(sqlite3.OperationalError):
            reader.db.execute("DELETE FROM evaluations")
    with pytest.raises(sqlite3.IntegrityError):  # the store itself refuses a second full evaluation
        store.record("full", {"prune": {}, "bits": {}}, Result("abc", memory_bytes=10, accuracy=1.0))
    store.close()
    with RunStore.open_writer(tmp_path / "run") as again:  # the lock is free once the driver is gone
        assert [r.result.candidate_id for r in again.records()] == ["abc"]


def test_store_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(UserInputError, match="does not exist"):
        RunStore.open_reader(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserInputError, match="not an autocompress run directory"):
        RunStore.open_reader(tmp_path / "plain")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.sqlite").write_bytes(b"this is not a database" * 100)
    for command in ("status", "pareto", "resume"):  # a damaged store is bad input: exit 2, naming the file
        assert main([command, str(tmp_path / "bad")]) == 2
        assert f"{tmp_path / 'bad' / 'store.sqlite'} is not a readable run store" in capsys.readouterr().err


# --------------------------------------------------------------------------- the CLI, in process


def tiny_spec(tmp_path: Path, **overrides) -> Path:
    data = make_spec_data(**{"space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
                             "budget.max_full_evaluations": 6, **overrides})
    return write_spec(tmp_path, data)


def test_search_status_pareto_export_and_load(tmp_path, capsys):
    spec = tiny_spec(tmp_path, **{"output.report": True})
    run = tmp_path / "run"
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Pareto set" in out and f"pareto.json: {run / 'pareto.json'}" in out
    document = json.loads((run / "pareto.json").read_text())
    assert document["format"] == "autocompress-pareto-v1" and document["state"] == "done"
    assert set(document["baseline"]) == {"accuracy", "memory_bytes", "energy_mj", "synops", "macs", "firing_rate",
                                         "latency_ms", "latency_batch_ms"}
    assert document["baseline"]["latency_ms"] is None  # latency.measure is off by default
    assert document["baseline"]["energy_mj"] > 0 and 0 <= document["baseline"]["firing_rate"] < 1  # (untrained)
    assert all(p["energy_mj"] > 0 and p["synops"] >= 0 for p in document["points"])
    assert set(document["constraints"]) >= {"max_drop_points", "min_saving", "max_bytes"}
    stats = document["statistics"]
    assert set(stats) >= {"full_evaluations", "proxy_evaluations", "gated_out", "failed", "retries", "wall_seconds",
                          "strategy", "seed"}
    assert stats["strategy"] == "greedy" and stats["seed"] == 0 and 0 < stats["full_evaluations"] <= 6
    point = document["points"][0]
    assert set(point) >= {"id", "accuracy", "accuracy_drop", "memory_bytes", "memory_saving", "feasible", "config",
                          "proxy"}
    assert (run / "spec.yaml").is_file()
    # the sensitivity table: greedy's first probes move one dimension each, one notch
    rows = document["sensitivity"]
    assert {(r["dimension"], r["choice"]) for r in rows} >= {("network.prune", 0.125), ("network.bits", 16)}
    assert all(r["memory_bytes"] and r["proxy"] is not None for r in rows)
    # the report: PNGs beside a self-contained report.html that embeds them
    from PIL import Image

    html = (run / "report.html").read_text()
    for name in ("pareto", "configs", "proxy", "progress", "sensitivity"):
        with Image.open(run / f"{name}.png") as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
        assert f'alt="{name}" src="data:image/png;base64,' in html
    assert point["id"] in html and "Search statistics" in html
    assert f"report:      {run / 'report.html'}" in out
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    assert main(["report", str(tmp_path)]) == 2
    assert "not an autocompress run directory" in capsys.readouterr().err

    assert main(["status", str(run), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "done" and status["stored"]["full"] == stats["full_evaluations"]
    assert main(["pareto", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == document["points"]

    out_file = tmp_path / "point.safetensors"
    assert main(["export", str(run), "--point", point["id"], "--out", str(out_file)]) == 0
    assert f"wrote {out_file}" in capsys.readouterr().out
    model = autocompress.load(out_file)
    session = Session.open(load_spec(spec), say=lambda _m: None)
    assert session.evaluate(model).accuracy == pytest.approx(point["accuracy"], abs=1e-9)
    assert main(["evaluate", str(spec), "--model", str(out_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluation"]["accuracy"] == pytest.approx(point["accuracy"], abs=1e-9)

    assert main(["export", str(run), "--point", "nope", "--out", str(out_file)]) == 2
    assert "point nope: no fully evaluated candidate" in capsys.readouterr().err


def test_resume_after_the_budget_is_raised(tmp_path, capsys):
    # (on 40 images of an untrained model no bound is within the limit: the gate, calibrated on the bounds,
    # would turn nearly everything away and random would end before the raised budget)
    spec = tiny_spec(tmp_path, **{"strategy": {"name": "random", "seed": 1}, "budget.max_full_evaluations": 3,
                                  "constraints.accuracy.confidence": None})
    run = tmp_path / "run"
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    assert json.loads((run / "pareto.json").read_text())["statistics"]["full_evaluations"] == 3
    assert main(["resume", str(run), "--max-full-evaluations", "7"]) == 0
    document = json.loads((run / "pareto.json").read_text())
    assert document["statistics"]["full_evaluations"] == 7 and document["statistics"]["sessions"] == 2
    with RunStore.open_reader(run) as store:
        fulls = [r.result.candidate_id for r in store.records(("full",))]
        assert len(fulls) == len(set(fulls)) == 7
        assert store.meta("budget")["max_full_evaluations"] == 7  # a later resume keeps the raised budget
    capsys.readouterr()


def test_a_held_out_split_measures_each_pareto_point_once_on_images_the_search_never_saw(tmp_path, capsys):
    spec = tiny_spec(tmp_path, **{"strategy": {"name": "random", "seed": 3}, "budget.max_full_evaluations": 3,
                                  "data.validation.holdout": 0.5})
    run = tmp_path / "run"
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "held-out %" in out and "held out of the search: 20 images (50% of the validation set)" in out
    session = Session.open(load_spec(spec), say=lambda _m: None)
    selection, held = session.evaluation_order(), session.holdout_order()
    assert len(selection) == len(held) == 20 and not set(selection) & set(held)
    document = json.loads((run / "pareto.json").read_text())
    with RunStore.open_reader(run) as store:
        assert store.meta("validation")["images"] == 20  # the baseline and the search saw the selection split only
        first = dict(store.meta("holdout")["results"])
    assert document["baseline"]["accuracy"] == pytest.approx(session.evaluate(indices=selection).accuracy)
    assert document["holdout"]["baseline_accuracy"] == pytest.approx(session.evaluate(indices=held).accuracy)
    assert set(first) == {"baseline"} | {p["id"] for p in document["points"]}
    point = document["points"][0]
    out_file = tmp_path / "point.safetensors"
    assert main(["export", str(run), "--point", point["id"], "--out", str(out_file)]) == 0
    model = autocompress.load(out_file)  # measured again, independently of the run
    assert point["holdout"]["accuracy"] == pytest.approx(session.evaluate(model, indices=held).accuracy)
    assert point["holdout"]["accuracy_drop"] == pytest.approx(
        document["holdout"]["baseline_accuracy"] - point["holdout"]["accuracy"])
    assert point["accuracy"] == pytest.approx(session.evaluate(model, indices=selection).accuracy)
    capsys.readouterr()

    assert main(["resume", str(run), "--max-full-evaluations", "8"]) == 0  # new points are measured, old ones kept
    said = capsys.readouterr()
    document = json.loads((run / "pareto.json").read_text())
    measured_now = {line.split()[1] for line in (said.out + said.err).splitlines() if line.startswith("held-out: ")}
    assert measured_now == {p["id"] for p in document["points"]} - set(first) != set()
    assert all(p["holdout"] is not None for p in document["points"])


def test_bad_run_directories_exit_2(tmp_path, capsys):
    assert main(["resume", str(tmp_path / "missing")]) == 2
    assert "run directory" in capsys.readouterr().err
    spec = tiny_spec(tmp_path)
    run = tmp_path / "run"
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["search", str(spec), "--run-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["search", str(tiny_spec(tmp_path, **{"execution.ray_address": "auto"})), "--run-dir",
                 str(tmp_path / "other")]) == 2
    assert "execution.workers is 0" in capsys.readouterr().err


# --------------------------------------------------------------------------- processes: kill, interrupt, Ray


def _default_sigint() -> None:
    # a suite started in the background of a non-interactive shell inherits SIGINT ignored,
    # and so would the search it starts: give it the Ctrl-C a terminal would
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autocompress", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=_default_sigint, **kwargs)


def _wait_for_fulls(run: Path, count: int, process: subprocess.Popen, timeout: float = HANG_GUARD) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with RunStore.open_reader(run) as store:
                if store.counts()["full"] >= count:
                    return
        except (UserInputError, sqlite3.OperationalError):  # no store yet, or it is being made
            pass
        time.sleep(0.1)
    raise AssertionError(f"no {count} full evaluations within {timeout} s")


@pytest.mark.slow
def test_status_from_another_process_and_a_second_driver_refused_and_ctrl_c(tmp_path):
    """The search is held in its 3rd full evaluation (fault injection) while another process
    reads its status, a second driver is refused and Ctrl-C stops it: no race with its end. It
    prints the Pareto set so far and how to go on; `resume --finish` then ends it with no new
    full evaluation, its points measured on the held-out split."""
    spec = tiny_spec(tmp_path, **{"strategy": {"name": "random", "seed": 0}, "budget.max_full_evaluations": 400,
                                  "data.validation.limit": 200, "data.validation.holdout": 0.5})
    run = tmp_path / "run"
    process = _cli("search", str(spec), "--run-dir", str(run),
                   env={**os.environ, "AUTOCOMPRESS_FAULT_INJECT": "wait-on-full:3"})
    try:
        _wait_for_fulls(run, 2, process)
        wait_for(lambda: (run / "fault-waiting").exists() or process.poll() is not None)
        assert process.poll() is None, process.communicate()
        status = subprocess.run([sys.executable, "-m", "autocompress", "status", str(run)], capture_output=True,
                                text=True, timeout=HANG_GUARD)
        assert status.returncode == 0, status.stderr
        assert "state:      running" in status.stdout and "of 400" in status.stdout
        second = subprocess.run([sys.executable, "-m", "autocompress", "resume", str(run)], capture_output=True,
                                text=True, timeout=HANG_GUARD)
        assert second.returncode == 2 and "in use by another autocompress driver" in second.stderr
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=HANG_GUARD)
        assert process.returncode == 130, err
    finally:
        if process.poll() is None:
            process.kill()
    assert "Pareto set" in out and f"autocompress resume {run} --finish" in err
    with RunStore.open_reader(run) as store:
        assert store.sessions()[-1]["state"] == "interrupted" and store.counts()["full"] >= 2
        fulls = store.counts()["full"]
    assert json.loads((run / "pareto.json").read_text())["state"] == "interrupted"
    finish = subprocess.run([sys.executable, "-m", "autocompress", "resume", str(run), "--finish"],
                            capture_output=True, text=True, timeout=HANG_GUARD)
    assert finish.returncode == 0, finish.stderr
    document = json.loads((run / "pareto.json").read_text())
    assert document["state"] == "done" and document["statistics"]["full_evaluations"] == fulls
    assert document["holdout"]["images"] > 0 and all(p["holdout"] is not None for p in document["points"])
    assert "held-out %" in finish.stdout


@pytest.mark.slow
def test_sigkill_while_stopped_on_both_sides_and_resume_gives_the_uninterrupted_journal(tmp_path):
    """Killed once validations stopped early as infeasible and as feasible are stored
    (estimates, not completed yet): the resumed run's journal (every full evaluation in
    order, the completions in place) and Pareto set are the uninterrupted run's. A trained
    tiny model whose 2-bit moves collapse it, every probe a full validation, a low stopping
    confidence so that 12 shards of 20 images decide both ways."""
    spec = tiny_spec(tmp_path, **{
        "model.args.depths": 2, "model.args.embed_dims": 32, "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
        "data.validation.limit": 240, "data.batch_size": 20, "proxy.enabled": False, "space.granularity": "block",
        "space.outside_blocks": "stage", "constraints.accuracy.max_drop": 3.0, "constraints.accuracy.confidence": None,
        "evaluation.confidence": 0.7, "compression.mse_clipping": False, "compression.recalibrate_batchnorm": False})
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "engine" / "kill_and_resume.py"), "--spec",
                           str(spec), "--kill-after", "3", "--stopped-on-both-sides", "--workers", "0", "--budget", "6",
                           "--keep", str(tmp_path / "runs"), "--json"], capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert report["stopped_sides_at_kill"] == ["feasible", "infeasible"] and report["estimates_at_kill"] >= 2
    assert report["same_journal"] and report["same_pareto_set"], report
    assert report["duplicate_full_evaluations"] == []
    assert report["full_evaluations"]["uninterrupted"] == report["full_evaluations"]["killed_and_resumed"]
    sides = {side for *_, side, _estimate in report["journal_resumed"]}
    assert sides >= {"infeasible", "feasible"} and report["ok"]


@pytest.mark.xdist_group("ray")
def test_the_ray_tests_are_grouped_on_one_worker(request):
    """`make test` runs the tests marked xdist_group("ray") on one worker (--dist loadgroup),
    so one Ray cluster serves them and no two Ray tests run at once. pytest 9.2 broke that
    silently (its node ids no longer take pytest-xdist's group suffix: pytest-xdist#1386):
    this fails instead."""
    if getattr(request.config.option, "loadgroup", False):  # on an xdist worker under --dist loadgroup
        assert request.node.nodeid.endswith("@ray"), "pytest-xdist no longer groups: see pyproject.toml's pytest pin"


def test_report_gives_every_bit_width_its_own_colour():
    from autocompress.report.build import bit_colours
    from autocompress.vocabulary import BITS_CHOICES

    levels, _cmap, norm = bit_colours()
    colours = [int(norm(bits)) for bits in BITS_CHOICES]
    assert levels == list(BITS_CHOICES) and 7 in levels
    assert colours == list(range(len(BITS_CHOICES)))  # 7 bits is no longer drawn as 8


def test_a_run_frozen_before_a_default_changed_resumes_with_the_behaviour_it_started_with():
    from autocompress.engine.driver import frozen_spec
    from autocompress.engine.worker import spec_from_frozen
    from autocompress.spec import validate_spec

    data = frozen_spec(validate_spec(make_spec_data(**{"strategy": {"name": "tpe", "seed": 2}})))
    current = spec_from_frozen(data, check_paths=False)
    assert current.compression.fold_batchnorm and current.strategy.warm_start == 8  # today's defaults kept
    del data["compression"]  # what a version before them froze
    del data["strategy"]["warm_start"]
    older = spec_from_frozen(data, check_paths=False)
    assert not (older.compression.fold_batchnorm or older.compression.mse_clipping
                or older.compression.recalibrate_batchnorm)
    assert older.strategy.warm_start == 0 and older.strategy.seed == 2
    data = frozen_spec(validate_spec(make_spec_data(**{"strategy": {"name": "random", "seed": 1},
                                                       "compression.importance": "activation"})))
    assert spec_from_frozen(data, check_paths=False).strategy.skip_dominated
    del data["strategy"]["skip_dominated"]  # frozen before random skipped dominated proposals
    del data["compression"]["bias_correction"]  # a compression section from before some of its settings
    older = spec_from_frozen(data, check_paths=False)
    assert not older.strategy.skip_dominated and not older.compression.bias_correction
    assert older.compression.importance == "activation" and older.compression.fold_batchnorm  # as frozen
    data = frozen_spec(validate_spec(make_spec_data(**{"strategy": {"name": "prioritized", "seed": 0}})))
    del data["strategy"]["keep_compressing"]  # frozen when prioritized stopped at the memory goal by default
    assert not spec_from_frozen(data, check_paths=False).strategy.keep_compressing
    data = frozen_spec(validate_spec(make_spec_data(**{"strategy": {"name": "greedy", "seed": 0}})))
    today = spec_from_frozen(data, check_paths=False)
    assert today.proxy.logits and today.strategy.min_step_share == 0.02 and today.strategy.free_share == 0.01
    assert today.strategy.max_failed_trades == 3 and today.space.outside_blocks == "unit"
    del data["proxy"]["logits"], data["strategy"]["min_step_share"], data["strategy"]["free_share"]
    del data["strategy"]["max_failed_trades"], data["space"]["outside_blocks"]
    older = spec_from_frozen(data, check_paths=False)  # frozen before the logits term, the shares, trades, stem split
    assert not older.proxy.logits and older.strategy.min_step_share == 0 and older.strategy.free_share == 0
    assert older.strategy.max_failed_trades == 0 and older.space.outside_blocks == "stage"
    assert today.evaluation.early_stopping == "both"
    data["evaluation"]["early_stopping"] = True  # frozen when only the infeasible side stopped
    assert spec_from_frozen(data, check_paths=False).evaluation.early_stopping == "infeasible"
    del data["evaluation"]["early_stopping"]  # frozen before validations stopped at all
    assert spec_from_frozen(data, check_paths=False).evaluation.early_stopping == "off"


def test_proxy_gate_false_ranks_by_drift_but_rejects_nothing(tmp_path):
    from autocompress.engine import start_search
    from autocompress.spec import load_spec

    spec = load_spec(tiny_spec(tmp_path, **{"proxy.gate": False, "proxy.threshold": 0.0}))  # would reject all
    document = start_search(spec, run_dir=tmp_path / "run", say=lambda _m: None)
    stats = document["statistics"]
    assert stats["gated_out"] == 0 and stats["proxy_evaluations"] > 0 and stats["full_evaluations"] > 0
    with RunStore.open_reader(tmp_path / "run") as store:
        fulls = store.records(("full",))
    assert fulls and all(r.result.gate == "off" and r.result.drift is not None for r in fulls)


def test_every_entry_point_enforces_the_caps_and_a_run_keeps_the_caps_it_started_with(tmp_path):
    """One check (autocompress.limits.check_limits) at every entry point: the Python API's
    start_search before it makes a run directory, resume with a session's overrides, and
    fine-tuning with its settings; a cap raised when the run started holds for its later
    sessions."""
    from autocompress.engine import RunOptions, resume_search, start_search
    from autocompress.engine.finetune import finetune
    from autocompress.errors import SpecError
    from autocompress.limits import Limits
    from autocompress.spec import validate_spec

    quiet = {"say": lambda _m: None}
    deep = validate_spec(make_spec_data(**{"model.args.T": 65}), base_dir=tmp_path)
    with pytest.raises(SpecError, match=r"model\.args\.T.*above the limit of 64"):
        start_search(deep, run_dir=tmp_path / "deep", **quiet)
    assert not (tmp_path / "deep").exists()

    spec = validate_spec(make_spec_data(**{"budget.max_full_evaluations": 1, "model.args.T": 65}), base_dir=tmp_path)
    raised = RunOptions(limits=Limits({"model.T": 65}))
    start_search(spec, run_dir=tmp_path / "run", options=raised, **quiet)  # allowed: the cap was raised
    with RunStore.open_reader(tmp_path / "run") as store:
        assert store.meta("limits") == {"model.T": 65}
    with pytest.raises(SpecError, match=r"--max-full-evaluations.*above the limit of 100,000"):
        resume_search(tmp_path / "run", options=RunOptions(max_full_evaluations=100_001), **quiet)
    with pytest.raises(SpecError, match=r"finetune\.epochs.*above the limit of 1,000"):
        finetune(tmp_path / "run", overrides=["finetune.epochs=1001"], progress=False, **quiet)
    # within the caps, with the run's own raised T cap: resume goes on (to its budget of 2)
    document = resume_search(tmp_path / "run", options=RunOptions(max_full_evaluations=2), **quiet)
    assert document["statistics"]["sessions"] == 2


def test_the_run_store_meta_is_typed_checked_when_written_and_migrated_when_read(tmp_path):
    """Every meta key has a model (autocompress.engine.meta): a value of the wrong shape or a
    key without a model fails where it is written; what an older version wrote is read in
    today's layout; get/put are the typed form."""
    import pydantic

    from autocompress.engine.meta import META_MODELS, Budget, Holdout

    with RunStore.create(tmp_path / "run", {"spec": {"name": "old", "strategy": {"name": "greedy"}}}) as store:
        with pytest.raises(KeyError, match="no model"):
            store.set_meta("budgte", {"max_full_evaluations": 3})
        with pytest.raises(pydantic.ValidationError):
            store.set_meta("budget", {"max_hours": 2})  # max_full_evaluations missing
        store.put(Budget(max_full_evaluations=7))
        assert store.get(Budget).max_full_evaluations == 7 and store.meta("budget") == {"max_full_evaluations": 7}
        # written by versions before a setting existed: read with the value that keeps their behaviour
        store.db.execute("INSERT OR REPLACE INTO meta VALUES ('constraints', ?)", (json.dumps(
            {"baseline_accuracy": 90.0, "baseline_bytes": 10, "max_drop_points": 1.0}),))
        assert store.constraints().confidence is None
        spec = store.meta("spec")
        assert spec["compression"]["importance"] == "l2" and spec["strategy"]["min_step_share"] == 0.0
        # held-out results of a version that kept no per-image bits read back without them
        store.set_meta("holdout", {"images": 4, "results": {"baseline": {"accuracy": 50.0, "correct": 2, "total": 4}}})
        assert "per_image" not in store.meta("holdout")["results"]["baseline"]
        assert store.get(Holdout).results["baseline"].correct == 2
    assert {"spec", "budget", "execution", "validation", "baseline", "holdout", "finetune", "limits"} <= set(META_MODELS)


def test_fail_if_infeasible_exits_4_when_no_point_is_feasible(tmp_path, capsys):
    """For scripts: a search that ends without a feasible point exits 4 with
    --fail-if-infeasible (0 without it), and so does resume; the run is kept either way."""
    spec = tiny_spec(tmp_path, **{"constraints.memory.min_saving": 0.999, "budget.max_full_evaluations": 2})
    assert main(["search", str(spec), "--run-dir", str(tmp_path / "plain")]) == 0
    assert main(["search", str(spec), "--run-dir", str(tmp_path / "run"), "--fail-if-infeasible"]) == 4
    assert "error: no feasible point (2 full evaluations)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "pareto.json").read_text())["best"] is None
    assert main(["resume", str(tmp_path / "run"), "--finish", "--fail-if-infeasible"]) == 4
    feasible = tiny_spec(tmp_path, **{"constraints.memory.min_saving": 0.0, "budget.max_full_evaluations": 2,
                                      "constraints.accuracy": {"max_drop": 50, "confidence": None}})
    assert main(["search", str(feasible), "--run-dir", str(tmp_path / "ok"), "--fail-if-infeasible"]) == 0


def test_a_replacement_without_room_is_waited_for_while_another_worker_lives_and_fails_the_search_only_alone():
    """The Ray executor's rule for a replacement Ray cannot place (its bookkeeping alone, no
    Ray): with another worker alive the search goes on and says once that it waits; with
    none left past start_timeout the search fails, naming the cause."""
    import time

    from autocompress.engine.executors import RayExecutor
    from autocompress.errors import AutocompressError

    events, states = [], []
    executor = object.__new__(RayExecutor)  # the rule only: no actors, no Ray
    executor.start_timeout, executor._said_waiting = 600.0, set()
    executor.on_event = lambda kind, message: events.append((kind, message))
    executor.on_worker = lambda name, **kw: states.append((name, kw["state"]))
    long_ago = time.monotonic() - 601
    executor.actors = {"worker-0": object(), "worker-1": object()}
    executor.starting = {"worker-1": (None, long_ago)}
    executor._check_starting()
    executor._check_starting()
    assert [kind for kind, _ in events] == ["worker-waiting"] and states == [("worker-1", "waiting")]
    assert "the search goes on with 1 worker" in events[0][1]
    executor.starting = {"worker-0": (None, long_ago), "worker-1": (None, long_ago)}  # no worker left
    with pytest.raises(AutocompressError, match="did not start within 600 s and no other worker is left"):
        executor._check_starting()
    executor.starting = {"worker-0": (None, time.monotonic()), "worker-1": (None, time.monotonic())}
    executor._check_starting()  # none left, but asked for just now: still waiting for Ray to place them
