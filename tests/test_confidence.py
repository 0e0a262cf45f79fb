"""Feasibility decided with confidence, and the held-out split deciding what is
recommended (the winner's curse: the smallest candidate just under the limit on the
images a search chose on is one whose drop it underestimated)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from autocompress.cli import main
from autocompress.engine import RunStore, Session
from autocompress.engine.pareto_file import measured_only, recommend, recommendation_line
from autocompress.searching import Constraints, Result, drop_upper_bound, paired_counts
from autocompress.searching.conformance import BASELINE_BYTES, PerImageEvaluator, make_loop
from autocompress.searching.execution import LocalExecutor, drive
from autocompress.spec import load_spec
from conftest import make_spec_data, write_spec


@pytest.mark.parametrize("images, worse, better, most", [
    (5000, 0.05, 0.035, 0.97), (5000, 0.03, 0.015, 0.97), (400, 0.03, 0.01, 0.975),  # near nominal
    (180, 0.01, 0.0, 1.0), (1000, 0.002, 0.0, 1.0)])  # a few discordant images: conservative, never short
def test_the_upper_bound_covers_the_true_drop_at_its_confidence(images, worse, better, most):
    """Simulated paired comparisons of a candidate with a known drop: the bound at 0.95
    lies at or above the true drop in at least about 95 % of them (fewer would break the
    promise), and not in nearly all of them where discordant images are plenty (a bound
    that wide would cost bytes for nothing). Agresti-Min covers the 180-image case 83 %."""
    rng = np.random.default_rng(7)
    truth = 100.0 * (worse - better)
    counts = rng.multinomial(images, [worse, better, 1 - worse - better], size=3000)
    covered = np.mean([drop_upper_bound(int(w), int(b), images, 0.95) >= truth for w, b, _ in counts])
    assert 0.935 <= covered <= most, covered
    # the wider the sample, the closer the bound; nothing seen says nothing
    assert drop_upper_bound(50, 20, 5000, 0.95) < drop_upper_bound(5, 2, 500, 0.95)
    assert drop_upper_bound(0, 0, 0, 0.95) == 100.0


def test_a_measured_drop_under_the_limit_is_not_feasible_when_its_bound_is_over():
    base = np.ones(1000, dtype=bool)
    cand = base.copy()
    cand[:12] = False  # 1.2 points worse, measured
    worse, better = paired_counts(base, cand)
    assert (worse, better) == (12, 0)
    decided = Constraints(baseline_accuracy=100.0, baseline_bytes=1000, max_drop_points=1.5, confidence=0.95)
    upper = decided.drop_upper(worse, better, 1000)
    assert upper > 1.5 and not decided.feasible(98.8, 100, drop_upper=upper)
    optimistic = Constraints(baseline_accuracy=100.0, baseline_bytes=1000, max_drop_points=1.5)
    assert optimistic.drop_upper(worse, better, 1000) is None and optimistic.feasible(98.8, 100)
    result = Result("r", memory_bytes=100, accuracy=98.8, accuracy_drop=1.2, drop_upper=upper)
    assert decided.decision_drop(result) == upper and not decided.result_accuracy_ok(result)


def test_the_search_decides_on_the_bound_and_keeps_the_pairs():
    """The synthetic landscape, image by image (early stopping on): each full result keeps
    its paired counts, its bound is computed from them, and feasible follows the bound."""
    evaluator = PerImageEvaluator(images=2000, seed=3)
    constraints = Constraints(evaluator.base_accuracy, BASELINE_BYTES, 1.5, min_saving=0.5, confidence=0.95)
    early = evaluator.early_stopping(250)
    loop = make_loop("greedy", max_full=12, constraints=constraints, shards=early.shards, early_stopping=early)
    drive(loop, LocalExecutor(evaluator))
    fulls = [r for r in loop.all_results() if r.exact]
    assert fulls
    for r in fulls:
        assert r.worse is not None and r.images == 2000
        assert r.drop_upper == pytest.approx(drop_upper_bound(r.worse, r.better, 2000, 0.95))
        assert r.accuracy_drop == pytest.approx(100.0 * (r.worse - r.better) / 2000)
        assert r.feasible == (r.drop_upper <= 1.5 + 1e-9 and constraints.memory_ok(r.memory_bytes))


def _point(pid, memory, feasible, held):
    return {"id": pid, "memory_bytes": memory, "memory_saving": 1 - memory / 1000, "feasible": feasible,
            "accuracy_drop": 0.5, "holdout": None if held is None else
            {"accuracy": 90.0, "accuracy_drop": 1.0, "drop_upper": 1.4, "images": 500, "feasible": held}}


def test_the_recommended_point_is_the_last_to_pass_from_the_largest_down():
    points = [_point("a", 100, True, True), _point("b", 200, True, False), _point("c", 300, False, False),
              _point("d", 400, True, True), _point("e", 500, True, True)]  # smallest memory first
    best, nearest, decided = recommend(points)
    # e and d pass; c is not selection-feasible (not tested); b fails: a is never reached
    assert (best, nearest["id"], decided) == ("d", "b", True)
    assert recommend([_point("a", 100, True, True), _point("b", 200, True, None)]) == (None, None, False)
    best, nearest, _ = recommend([_point("a", 100, True, False)])
    assert best is None and nearest["id"] == "a"
    document = {"best": None, "points": [_point("a", 100, True, False)], "constraints": {"max_drop_points": 1.5},
                "holdout": {"decided": True, "confidence": 0.95, "nearest": {"id": "a", **_point(
                    "a", 100, True, False)["holdout"]}}}
    line = recommendation_line(document)
    assert line.startswith("none of the chosen points stays within 1.5 points on held-out images; nearest: a")
    assert "measured drop alone" not in line


def test_with_no_point_certified_the_measured_drop_names_one_and_says_it_is_not_a_promise():
    # 180 held-out images: a bound falls under 1.5 points only for a point that matches the
    # baseline image for image, so nothing passes; the measured drops of b and c are within
    points = [_point("a", 100, True, False), _point("b", 200, True, False), _point("c", 300, True, False)]
    points[0]["holdout"]["accuracy_drop"] = 2.2  # a: over the limit even as measured
    assert recommend(points)[0] is None
    weak = measured_only(points, 1.5)
    assert weak["id"] == "b"  # from the largest down, the last within the limit before a fails
    points[2]["holdout"]["accuracy_drop"] = 1.7  # the largest fails: the sequence stops at once
    assert measured_only(points, 1.5) is None
    assert measured_only([_point("a", 100, False, None)], 1.5) is None  # nothing selection-feasible
    document = {"best": None, "points": points, "constraints": {"max_drop_points": 1.5},
                "holdout": {"decided": True, "confidence": 0.95, "nearest": {"id": "c", **points[2]["holdout"]},
                            "measured_only": weak}}
    line = recommendation_line(document)
    assert "nearest: c" in line and "measured drop alone, not certified at 95%: b (200 bytes" in line
    assert "at most +1.40 on 500 images" in line


def test_a_held_out_run_recommends_on_held_out_figures_and_names_its_images(tmp_path, capsys):
    # 20 images a side: a wide limit and a low confidence, so that the held-out test has points to test
    spec = write_spec(tmp_path, make_spec_data(**{
        "space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
        "budget.max_full_evaluations": 5, "data.validation.holdout": 0.5,
        "constraints.accuracy": {"max_drop": 20.0, "confidence": 0.7}}))
    run = tmp_path / "run"
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "held-out drop" in out and ("recommended point:" in out or "none of the chosen points" in out)
    document = json.loads((run / "pareto.json").read_text())
    held = document["holdout"]
    assert held["decided"] and held["confidence"] == 0.7
    assert document["best"] is not None or held["nearest"] is not None  # the test reached a point
    for point in document["points"]:
        measured = point["holdout"]
        assert measured["worse"] is not None and measured["drop_upper"] is not None
        assert measured["feasible"] == (point["feasible"] and measured["drop_upper"] <= 20.0 + 1e-9)
    best, _, _ = recommend(document["points"])
    assert document["best"] == best
    # which images were held out, in a file of the run
    session = Session.open(load_spec(spec), say=lambda _m: None)
    splits = json.loads((run / "splits.json").read_text())
    assert splits["holdout"]["items"] == [int(i) for i in session.holdout_order()]
    assert splits["selection_images"] == len(session.evaluation_order())
    assert len(splits["calibration"]["sources"]) == splits["calibration"]["images"] > 0
    # status shows the same recommendation
    assert main(["status", str(run), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["best"] or {}).get("id") == document["best"] and status["holdout"]["decided"]
    # the service shows the same point, its held-out figures first (the selection ones after them)
    from autocompress.service.jobs import REQUEST, JobManager

    jobs = JobManager(tmp_path / "runs")
    shutil.copytree(run, jobs.runs_dir / "held")
    (jobs.runs_dir / "held" / REQUEST).write_text(json.dumps({"name": "held", "strategy": {"name": "greedy"}}))
    served = jobs.status("held")
    assert served["best"] == status["best"] and served["holdout"]["decided"]
    assert list(served["best"])[:3] == ["id", "decided_on", "holdout"] and served["best"]["decided_on"] == "holdout"
    # evaluate --split holdout reproduces the held-out baseline pareto.json reports, exactly
    assert main(["evaluate", str(spec), "--split", "holdout", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "holdout" and evaluated["evaluation"]["accuracy"] == held["baseline_accuracy"]
    with RunStore.open_reader(run) as store:
        assert "per_image" in store.meta("holdout")["results"]["baseline"]


def test_a_search_says_when_its_images_cannot_show_the_limit(tmp_path, capsys):
    spec = write_spec(tmp_path, make_spec_data(**{"budget.max_full_evaluations": 1}))  # 40 images, 1.5 points
    assert main(["search", str(spec), "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "40 selection images cannot show any candidate within 1.5 points at 95% confidence" in err
    with RunStore.open_reader(tmp_path / "run") as store:
        assert any("cannot show any candidate" in e["message"] for e in store.events("warning"))


def test_evaluate_refuses_a_split_the_spec_does_not_hold(tmp_path, capsys):
    spec = write_spec(tmp_path, make_spec_data())
    assert main(["evaluate", str(spec), "--split", "holdout"]) == 2
    assert "holds no validation images out" in capsys.readouterr().err
