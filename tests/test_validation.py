"""Full validation at cluster scale: the seeded stratified order, shards that sum to one
pass, early stopping's sequential tests (their error rate on each side and their power,
the bounds they give), the records of early-stopped candidates, completion of what would
be reported, autocast's check, and run stores of earlier versions."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from autocompress.data import stratified_order
from autocompress.engine import RunStore
from autocompress.engine.driver import _check_autocast
from autocompress.engine.pipeline import Setup
from autocompress.engine.worker import Worker
from autocompress.errors import UserInputError
from autocompress.searching import (
    EarlyStopping,
    LocalExecutor,
    Result,
    default_shard_images,
    drive,
    feasible_cells,
    sequential_bounds,
    pack,
    shard_bounds,
    unpack,
)
from autocompress.searching.conformance import BASELINE_BYTES, PerImageEvaluator, make_loop
from autocompress.searching.results import Constraints
from autocompress.spec import SpecError, validate_spec
from conftest import FIXTURES, make_spec_data, write_spec


def test_the_order_is_a_seeded_permutation_whose_prefixes_keep_the_class_shares():
    labels = np.repeat(np.arange(10), [50, 80, 20, 100, 40, 60, 30, 90, 70, 10])
    order = stratified_order(labels, seed=7)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert np.array_equal(order, stratified_order(labels, seed=7))
    assert not np.array_equal(order, stratified_order(labels, seed=8))
    shares = np.bincount(labels) / len(labels)
    for k in (25, 100, 333):
        counts = np.bincount(labels[order[:k]], minlength=10)
        assert np.all(np.abs(counts - k * shares) <= 2.0), (k, counts, k * shares)  # a random order: ~sqrt(k)


def test_shards_are_whole_batches():
    assert default_shard_images(50_000, 128) == 512 and default_shard_images(360, 128) == 128
    shards = shard_bounds(50_000, 512)
    assert len(shards) == 98 and shards[0] == (0, 512) and shards[-1] == (49_664, 50_000)
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    bits = np.random.default_rng(0).random(1001) < 0.5
    assert np.array_equal(unpack(pack(bits), 1001), bits)


def _paired(rng, images: int, accuracy: float, discordance: float, drop: float):
    base = rng.random(images) < accuracy
    right, wrong = np.flatnonzero(base), np.flatnonzero(~base)
    better = int(discordance / 2 * images)
    worse = better + round(drop / 100 * images)
    cand = base.copy()
    cand[rng.choice(right, worse, replace=False)] = False
    cand[rng.choice(wrong, better, replace=False)] = True
    return base, cand


def _stops(early: EarlyStopping, cand: np.ndarray) -> tuple[str | None, int]:
    """(the side the validation stopped on or None, positions read)."""
    evidence = early.start()
    for start, stop in early.shards:
        side = evidence.add(cand[start:stop])
        if side is not None:
            return side, stop
    return None, len(cand)


@pytest.mark.parametrize("truth, wrong_side", [(1.5, "infeasible"), (1.75, "feasible")])
def test_each_side_errs_less_often_than_its_confidence(truth, wrong_side):
    """4,000 images, 16 looks, confidence 0.9 (so that 300 trials can see the rate): a
    candidate exactly at the limit is stopped as infeasible, and one a quarter point beyond
    it as feasible, less often than 1 in 10 (the bench measures 1 in 1,000 at 0.999)."""
    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(300):
        base, cand = _paired(rng, 4000, 0.75, 0.10, truth)
        early = EarlyStopping(base, shard_bounds(4000, 250), 1.5, confidence=0.9)
        wrong += _stops(early, cand)[0] == wrong_side
    assert wrong / 300 <= 0.1, wrong


def test_both_sides_stop_what_is_far_from_the_limit_and_bound_the_drop():
    rng = np.random.default_rng(1)
    for truth, side in ((12.0, "infeasible"), (-1.0, "feasible")):
        stopped = 0
        for _ in range(30):
            base, cand = _paired(rng, 4000, 0.75, 0.10, truth)
            early = EarlyStopping(base, shard_bounds(4000, 250), 1.5, confidence=0.999)
            got, at = _stops(early, cand)
            stopped += got == side and at <= 2500
        assert stopped >= 27, (truth, stopped)
    # infeasible alone never stops a feasible candidate; off never stops
    base, cand = _paired(rng, 4000, 0.75, 0.10, -1.0)
    assert _stops(EarlyStopping(base, shard_bounds(4000, 250), 1.5, mode="infeasible"), cand)[0] is None
    base, cand = _paired(rng, 4000, 0.75, 0.10, 12.0)
    assert _stops(EarlyStopping(base, shard_bounds(4000, 250), 1.5, mode="off"), cand)[0] is None
    # the bounds hold the estimate, narrow as images are read, and meet at the whole set's drop
    early = EarlyStopping(base, shard_bounds(4000, 250), 1.5)
    d = [early.differences(i, cand[a:b]) for i, (a, b) in enumerate(early.shards)]
    low4, high4 = sequential_bounds(d[:4], 4000, 0.001)
    low8, high8 = sequential_bounds(d[:8], 4000, 0.001)
    estimate = 100 * sum(int(x.sum()) for x in d[:4]) / 1000
    assert low4 <= estimate <= high4 and low4 <= low8 <= 12.0 <= high8 <= high4
    low, high = sequential_bounds(d, 4000, 0.001)
    assert low == pytest.approx(12.0, abs=0.01) and high == pytest.approx(12.0, abs=0.01)


def test_a_decision_with_confidence_makes_the_feasible_side_stricter():
    """With constraints.accuracy.confidence the whole set's upper bound must be within the
    limit: the cells' drops fall from near the limit (few better images) to well below it
    (as many better images as the baseline has errors). Across candidates from 0.6 points
    better to 1.4 worse, 20 % discordant, the plain limit stops many as feasible whose bound
    over all 4,000 images is beyond the limit; the rule stops (almost) none of those, and
    still stops the clearly feasible."""
    from autocompress.searching import drop_upper_bound

    rng = np.random.default_rng(2)
    base = rng.random(4000) < 0.75
    cells = feasible_cells(base, 1.5, 0.95)
    assert cells[0][0] == 0 and feasible_cells(base, 1.5, None) == [(0, 1.5)]
    drops = [drop for _, drop in cells]
    assert drops == sorted(drops, reverse=True) and drops[0] < 1.5 and drops[-1] < drops[0] - 0.5
    strict = EarlyStopping(base, shard_bounds(4000, 250), 1.5, confidence=0.9, decision_confidence=0.95)
    plain = EarlyStopping(base, shard_bounds(4000, 250), 1.5, confidence=0.9)
    right, errors = np.flatnonzero(base), np.flatnonzero(~base)
    stops = {"strict": 0, "plain": 0}
    wrong = {"strict": 0, "plain": 0}
    beyond = 0
    for drop in np.linspace(-0.6, 1.4, 60):
        better = 400 - round(drop * 20)
        worse = better + round(drop * 40)
        cand = base.copy()
        cand[rng.choice(right, worse, replace=False)] = False
        cand[rng.choice(errors, better, replace=False)] = True
        rejected = drop_upper_bound(worse, better, 4000, 0.95) > 1.5
        beyond += rejected
        for name, rule in (("strict", strict), ("plain", plain)):
            side = _stops(rule, cand)[0]
            stops[name] += side == "feasible"
            wrong[name] += side == "feasible" and rejected
    assert beyond >= 20 and stops["plain"] > stops["strict"] > 0, (beyond, stops)
    assert wrong["plain"] >= 10 and wrong["strict"] <= 0.1 * beyond, (wrong, beyond)


def test_sharded_search_matches_one_pass_and_reports_only_exact_points():
    """Both sides stopped: the path, the feasible candidates and the Pareto set (ids and
    exact accuracies) are those of validating every image; stopped candidates that would be
    points were completed, the others stay estimates, never points."""
    whole, sharded = PerImageEvaluator(images=6_000), PerImageEvaluator(images=6_000)
    constraints = Constraints(whole.base_accuracy, BASELINE_BYTES, 1.5, 0.25)
    plain = make_loop("random", max_full=15, constraints=constraints)
    drive(plain, LocalExecutor(whole))
    early = sharded.early_stopping(500)
    loop = make_loop("random", max_full=15, constraints=constraints, shards=early.shards, early_stopping=early)
    drive(loop, LocalExecutor(sharded))
    exact = {r.candidate_id: r.accuracy for r in plain.all_results() if r.evaluated}
    stopped = [r for r in loop.all_results() if r.stop is not None]
    assert {"infeasible", "feasible"} <= {r.stop for r in stopped}, "both sides stop on this landscape"
    assert loop.stats.completed and sharded.images_read < 15 * 6_000
    assert plain.full_order == loop.full_order
    for result in loop.all_results():
        if result.exact:
            assert result.accuracy == pytest.approx(exact[result.candidate_id], abs=1e-9)
            assert result.images == 6_000
        elif result.early_stopped:
            assert constraints.accuracy_ok(exact[result.candidate_id]) == (result.stop == "feasible")
            assert result.images < 6_000 and result.drop_low <= result.accuracy_drop <= result.drop_high
    from autocompress.searching import pareto_set

    mine, theirs = pareto_set(loop.all_results(), constraints), pareto_set(plain.all_results(), constraints)
    # the same set, though collapsed candidates on its small end were stopped as infeasible: they were completed
    assert [(p.candidate_id, round(p.accuracy, 9)) for p in mine.points] == [
        (p.candidate_id, round(p.accuracy, 9)) for p in theirs.points]
    assert all(p.exact for p in mine.points) and mine.best.candidate_id == theirs.best.candidate_id
    assert {p.candidate_id for p in mine.points} & {r.candidate_id for r in stopped if r.stop == "infeasible"}
    feasible_plain = {r.candidate_id for r in plain.all_results() if r.feasible}
    assert feasible_plain == {r.candidate_id for r in loop.all_results() if r.feasible}


def test_worker_shards_sum_to_the_whole_pass(tmp_path):
    spec = validate_spec(make_spec_data(**{"data.validation.limit": 60, "data.batch_size": 16}))
    setup = Setup.open(spec, say=lambda _m: None)
    worker = Worker(setup.session, setup.groups)
    candidate = setup.space.candidate(tuple(len(d.choices) // 2 for d in setup.space.dims))
    one = worker.full(candidate)
    parts = [worker.full(candidate, shard) for shard in shard_bounds(one.total, 16)]
    assert sum(p.correct for p in parts) == one.correct and sum(p.total for p in parts) == one.total == 60
    assert np.array_equal(np.concatenate([p.per_image for p in parts]), one.per_image)
    base = worker.baseline()
    assert base["count"] == 60 and len(unpack(base["per_image"], 60)) == 60


def test_early_stopped_candidates_are_recorded_and_shown_as_such(tmp_path, cli):
    # without the proxy every probe is a full validation: collapsing moves get validated, then stopped
    spec = write_spec(tmp_path, make_spec_data(**{
        "model.args.depths": 2, "model.args.embed_dims": 32, "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
        "data.validation.limit": 200, "data.batch_size": 20, "proxy.enabled": False,
        "constraints.accuracy.max_drop": 1.0, "budget.max_full_evaluations": 8,
        # plain rounding: its 2-bit moves collapse the tiny model, which is what is to be stopped here
        "compression.mse_clipping": False, "compression.recalibrate_batchnorm": False,
        # 7 dimensions: within 8 full validations the walk reaches moves that collapse the model
        "space.outside_blocks": "stage", "output.report": True}))
    run = tmp_path / "run"
    done = cli("search", str(spec), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr
    assert "validation in 10 shards of 20 images, early stopping both" in done.stderr
    document = json.loads((run / "pareto.json").read_text())
    stats = document["statistics"]
    assert stats["validation"] == {"images": 200, "order_seed": 0, "shard_images": 20}
    with RunStore.open_reader(run) as store:
        fulls = [r.result for r in store.records(("full",))]
    stopped = [r for r in fulls if r.early_stopped]
    assert stopped, [(r.accuracy_drop, r.images) for r in fulls]
    assert stats["early_stopped"] == len(stopped) and stats["validation_images"] == sum(r.images for r in fulls)
    assert {p["id"] for p in document["early_stopped"]} == {r.candidate_id for r in stopped}
    assert not {p["id"] for p in document["points"]} & {r.candidate_id for r in stopped}
    for entry in document["early_stopped"]:
        assert entry["images"] < 200 and entry["side"] == "infeasible" and entry["accuracy_drop_at_least"] > 1.0
        estimate = document["baseline"]["accuracy"] - entry["accuracy_estimate"]
        assert entry["accuracy_drop_at_least"] <= estimate + 1e-9 <= entry["accuracy_drop_at_most"] + 2e-9
    assert "stopped early (certainly infeasible" in done.stdout
    assert f"stopped early {len(stopped)}" in cli("status", str(run)).stdout
    assert "Stopped early" in (run / "report.html").read_text()
    exported = cli("export", str(run), "--point", stopped[0].candidate_id, "--out", str(tmp_path / "m.safetensors"))
    assert exported.returncode == 0 and "validation stopped early as certainly infeasible" in exported.stdout


def test_shard_size_must_be_whole_batches():
    with pytest.raises(SpecError, match="evaluation.shard_images 100 is not a multiple of data.batch_size 64.*use 128"):
        validate_spec(make_spec_data(**{"data.batch_size": 64, "evaluation.shard_images": 100}))
    spec = validate_spec(make_spec_data(**{"data.batch_size": 64, "evaluation.shard_images": 128}))
    assert spec.evaluation.early_stopping == "both" and spec.evaluation.confidence == 0.999
    older = validate_spec(make_spec_data(**{"evaluation.early_stopping": True}))  # specs before the two sides
    assert older.evaluation.early_stopping == "infeasible"
    assert validate_spec(make_spec_data(**{"evaluation.early_stopping": False})).evaluation.early_stopping == "off"


def test_autocast_that_changes_the_baseline_is_refused():
    spec = validate_spec(make_spec_data(**{"evaluation.autocast": "bf16", "evaluation.autocast_tolerance": 0.2}))
    _check_autocast({"autocast": "bf16", "accuracy": 75.1, "fp32_accuracy": 75.2}, spec)  # within: used
    with pytest.raises(UserInputError, match=r"evaluation.autocast bf16: .*75.000 % under autocast and 75.500 % in "
                                             r"FP32, 0.500 points apart .*set evaluation.autocast: off"):
        _check_autocast({"autocast": "bf16", "accuracy": 75.0, "fp32_accuracy": 75.5}, spec)


def test_autocast_runs_on_the_cpu_and_the_baseline_reports_fp32_beside_it():
    spec = validate_spec(make_spec_data(**{"evaluation.autocast": "bf16", "data.validation.limit": 30}))
    setup = Setup.open(spec, say=lambda _m: None)
    base = Worker(setup.session, setup.groups).baseline()
    assert base["autocast"] == "bf16" and 0 <= base["fp32_accuracy"] <= 100 and base["count"] == 30


def test_a_store_of_an_earlier_version_is_read_and_upgraded(tmp_path):
    run = tmp_path / "run"
    store = RunStore.create(run, {"spec": {"name": "x"}})
    store.begin_session("search", workers=0, executor="in-process", max_full_evaluations=5)
    store.record("full", {"prune": {}, "bits": {}}, Result("abc", memory_bytes=10, accuracy=1.0))
    store.close()
    with sqlite3.connect(run / "store.sqlite") as db:  # the evaluations table as versions before 0.15 made it
        for column in ("images", "early_stopped", "drop_bound"):
            db.execute(f"ALTER TABLE evaluations DROP COLUMN {column}")
    with RunStore.open_reader(run) as reader:
        (record,) = reader.records(("full",))
        assert record.result.images is None and record.result.early_stopped is False
    writer = RunStore.open_writer(run)
    writer.begin_session("resume", workers=0, executor="in-process", max_full_evaluations=5)
    writer.record("full", {"prune": {}, "bits": {}}, Result("def", memory_bytes=9, accuracy=0.5, images=40,
                                                            early_stopped=True, drop_bound=3.0))
    stopped = [r.result for r in writer.records(("full",)) if r.result.early_stopped]
    writer.close()
    assert [(r.candidate_id, r.images, r.drop_bound) for r in stopped] == [("def", 40, 3.0)]


class _Slots:
    """Four workers; a submitted shard runs when waited on, oldest first; a cancelled one
    ends at once, unevaluated (as a Ray actor's shard does at its next batch)."""

    def __init__(self, evaluator):
        self.evaluator, self.running, self.cancelled = evaluator, [], []

    def free(self):
        return 4 - len(self.running)

    def submit(self, task):
        self.running.append(task)

    def wait(self, timeout=None):
        from autocompress.searching import Completion, TaskOutcome, execute

        if not self.running:
            return []
        task = self.running.pop(0)
        if task in self.cancelled:
            return [Completion(task, TaskOutcome(error="TaskCancelledError: cancelled"), "w")]
        return [Completion(task, execute(self.evaluator, task.stage, task.candidate, task.shard), "w")]

    def cancel(self, tasks):
        self.cancelled += tasks

    def baseline(self):
        return self.evaluator.baseline()


def test_a_stopped_validation_cancels_its_running_shards():
    evaluator = PerImageEvaluator(images=6_000)
    constraints = Constraints(evaluator.base_accuracy, BASELINE_BYTES, 1.5, 0.25)
    early = evaluator.early_stopping(500)
    decided_at_cancel = []
    loop = make_loop("random", max_full=10, constraints=constraints, shards=early.shards, early_stopping=early)
    executor = _Slots(evaluator)
    cancel = executor.cancel

    def watched(tasks):
        decided_at_cancel.extend(t.candidate.id in loop.results and loop.results[t.candidate.id].early_stopped
                                 for t in tasks)
        cancel(tasks)

    executor.cancel = watched
    drive(loop, executor)
    assert executor.cancelled and all(decided_at_cancel)  # only shards of validations already stopped
    assert all(t.stage == "full" for t in executor.cancelled) and loop.finished


def test_an_evaluation_asked_to_stop_ends_between_batches(tmp_path):
    from autocompress.evaluation import EvaluationCancelled
    from autocompress.searching import execute

    spec = validate_spec(make_spec_data(**{"data.validation.limit": 60, "data.batch_size": 16}))
    setup = Setup.open(spec, say=lambda _m: None)
    worker = Worker(setup.session, setup.groups)
    candidate = setup.space.candidate(tuple(0 for _ in setup.space.dims))
    asked = []
    worker.should_stop = lambda: asked.append(1) or len(asked) > 2  # stop before the third batch
    with pytest.raises(EvaluationCancelled, match="cancelled after 2 batches"):
        worker.full(candidate, (0, 48))
    outcome = execute(worker, "full", candidate, (0, 48))
    assert outcome.error.startswith("EvaluationCancelled") and outcome.per_image is None


def test_a_completion_that_fails_leaves_the_estimate_and_the_search_ends():
    """Completions whose shards fail (a worker's error once the search has ended): the
    candidates stay estimates, never points, and the loop ends instead of retrying."""
    evaluator = PerImageEvaluator(images=6_000)
    constraints = Constraints(evaluator.base_accuracy, BASELINE_BYTES, 1.5, 0.25)
    early = evaluator.early_stopping(500)
    loop = make_loop("random", max_full=15, constraints=constraints, shards=early.shards, early_stopping=early)
    full = evaluator.full

    def failing(candidate, shard=None):
        if loop.ended is not None:
            raise RuntimeError("the worker's disk is gone")
        return full(candidate, shard)

    evaluator.full = failing
    drive(loop, LocalExecutor(evaluator))
    assert loop.finished and loop.stats.completed == 0
    from autocompress.searching import pareto_set

    front = pareto_set(loop.all_results(), constraints)
    stopped = {r.candidate_id for r in loop.all_results() if r.early_stopped}
    assert stopped and all(p.exact for p in front.points) and not stopped & {p.candidate_id for p in front.points}
