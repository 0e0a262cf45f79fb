"""Recovery fine-tuning (``autocompress finetune``): QAT with the straight-through
estimator, distillation, checkpoints that survive SIGKILL, the tuned export, and the
settings' validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import autocompress
from autocompress.cli import main
from autocompress.compress import compress_model, export_compressed, footprint, load_compressed
from autocompress.compress.qat import freeze_qat, prepare_qat
from autocompress.engine import Session
from autocompress.engine.finetune import (
    CHECKPOINT,
    membrane_loss,
    read_checkpoint,
    select_points,
    tune_dir,
)
from autocompress.engine.worker import FAULT_ENV
from autocompress.errors import CheckpointError, SpecError
from autocompress.spec import load_spec, validate_spec
from conftest import FIXTURES, HANG_GUARD, PLAIN, REPO, make_spec_data, tiny_trained_model, write_spec

QUICK = ["--set", "finetune.data.images_per_epoch=64", "--set", "finetune.batch_size=16"]  # 4 steps an epoch


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished tiny search (network granularity, 6 full evaluations) and its spec."""
    folder = tmp_path_factory.mktemp("finetune")
    data = make_spec_data(**{"space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
                             "budget.max_full_evaluations": 6, "model.args.depths": 2, "model.args.embed_dims": 32,
                             "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt")})
    spec = write_spec(folder, data)
    assert main(["search", str(spec), "--run-dir", str(folder / "run")]) == 0
    document = json.loads((folder / "run" / "pareto.json").read_text())
    compressed = [p for p in document["points"] if p["config"]["prune"] or p["config"]["bits"]]
    return spec, folder / "run", compressed[0]


def test_finetune_prints_before_and_after_and_the_tuned_export_reproduces_it(searched, tmp_path, capsys):
    spec, original, point = searched
    run = tmp_path / "run"
    shutil.copytree(original, run)
    capsys.readouterr()
    assert main(["finetune", str(run), "--point", point["id"], "--epochs", "2", *QUICK]) == 0
    out, err = capsys.readouterr()
    entry = json.loads((run / "pareto.json").read_text())["tuned"]["finetuned"][point["id"]]
    assert entry["state"] == "done" and entry["epoch"] == entry["epochs"] == 2
    assert entry["accuracy_before"] == point["accuracy"]
    assert entry["energy_mj_before"] == point["energy_mj"] and entry["energy_mj"] > 0  # counted again after tuning
    assert f"{point['id']}: {point['memory_bytes']:,} bytes, top-1 {point['accuracy']:.2f} % -> " \
           f"{entry['accuracy']:.2f} %" in out
    assert "epoch 1/2: loss" in err and "epoch 2/2: loss" in err  # live progress, one line an epoch

    # the tuned file: same footprint as the untuned export, and it reproduces the tuned accuracy
    tuned, untuned = tmp_path / "tuned.safetensors", tmp_path / "untuned.safetensors"
    assert main(["export", str(run), "--point", point["id"], "--tuned", "--out", str(tuned)]) == 0
    assert f"fine-tuned accuracy {entry['accuracy']:.2f} % top-1" in capsys.readouterr().out
    assert main(["export", str(run), "--point", point["id"], "--out", str(untuned)]) == 0
    capsys.readouterr()
    model = autocompress.load(tuned)
    assert footprint(model) == point["memory_bytes"] == entry["memory_bytes"]
    assert tuned.stat().st_size == untuned.stat().st_size
    session = Session.open(load_spec(spec), say=lambda _m: None)
    assert session.evaluate(model).accuracy == pytest.approx(entry["accuracy"], abs=1e-9)
    assert not torch.equal(model.net.state_dict()["head.weight"], autocompress.load(untuned).net.state_dict()["head.weight"])

    # status shows it; a second call with the same settings trains nothing; the tuned front lists it
    assert main(["status", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["finetune"][point["id"]]
    assert shown["state"] == "done" and shown["accuracy"] == entry["accuracy"]
    assert main(["finetune", str(run), "--point", point["id"], "--epochs", "2", *QUICK]) == 0
    assert "already fine-tuned with these settings" in capsys.readouterr().err
    document = json.loads((run / "pareto.json").read_text())
    marked = {p["id"]: p.get("tuned") for p in document["points"]}
    assert marked[point["id"]]["accuracy"] == entry["accuracy"]
    assert any(p["tuned"] for p in document["tuned"]["points"]) or entry["accuracy"] <= point["accuracy"]


def test_a_finetune_killed_mid_epoch_resumes_from_its_last_checkpoint(searched, tmp_path, capsys):
    _, original, point = searched
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    shutil.copytree(original, killed)
    shutil.copytree(original, straight)
    args = ["finetune", "--point", point["id"], "--epochs", "3", *QUICK]
    # step 6 of 12: in the middle of epoch 2, after epoch 1's checkpoint
    env = {**os.environ, FAULT_ENV: "kill-in-finetune:6", "PYTHONPATH": str(REPO)}
    process = subprocess.run([sys.executable, "-m", "autocompress", args[0], str(killed), *args[1:]], env=env,
                             capture_output=True, text=True, timeout=HANG_GUARD, cwd=tmp_path)
    assert process.returncode == -9, process.stderr[-2000:]
    state = read_checkpoint(tune_dir(killed, point["id"]) / CHECKPOINT)
    assert state["epoch"] == 1
    assert main(["status", str(killed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finetune"][point["id"]]["state"] == "interrupted"

    # other settings do not continue it silently
    assert main([args[0], str(killed), *args[1:], "--set", "finetune.lr=0.01"]) == 2
    assert "was written with other fine-tuning settings; restart (restart=True, --restart)" in capsys.readouterr().err

    assert main([args[0], str(killed), *args[1:]]) == 0
    assert "resuming from the checkpoint of epoch 1/3" in capsys.readouterr().err
    assert main([args[0], str(straight), *args[1:]]) == 0
    capsys.readouterr()
    # the resumed fine-tuning is the uninterrupted one: same data order, same optimizer state
    resumed = json.loads((killed / "pareto.json").read_text())["tuned"]["finetuned"][point["id"]]
    uninterrupted = json.loads((straight / "pareto.json").read_text())["tuned"]["finetuned"][point["id"]]
    assert resumed["accuracy"] == uninterrupted["accuracy"]
    from safetensors.torch import load_file

    resumed_weights = load_file(tune_dir(killed, point["id"]) / "tuned.safetensors")
    straight_weights = load_file(tune_dir(straight, point["id"]) / "tuned.safetensors")
    assert resumed_weights.keys() == straight_weights.keys()
    assert all(torch.equal(resumed_weights[key], straight_weights[key]) for key in resumed_weights)


def test_bad_points_and_checkpoints_are_clear_errors(searched, tmp_path, capsys):
    _, original, point = searched
    run = tmp_path / "run"
    shutil.copytree(original, run)
    assert main(["finetune", str(run), "--point", "0123456789ab"]) == 2
    assert "no fully evaluated candidate with that id" in capsys.readouterr().err
    assert main(["finetune", str(run), "--set", "data.batch_size=4"]) == 2
    assert "fine-tuning changes only the finetune section" in capsys.readouterr().err
    assert main(["export", str(run), "--point", point["id"], "--tuned", "--out", str(tmp_path / "x")]) == 2
    assert "no finished fine-tuning of that point" in capsys.readouterr().err
    broken = tune_dir(run, point["id"]) / CHECKPOINT
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot be read .* --restart"):
        read_checkpoint(broken)
    assert main(["finetune", str(run), "--point", point["id"], "--epochs", "1", *QUICK]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(["finetune", str(run), "--point", point["id"], "--epochs", "1", "--restart", *QUICK]) == 0


def test_the_straight_through_quantizer_passes_gradients_and_freezes_onto_the_export_grid(tmp_path):
    model = tiny_trained_model("spikformer")
    images = torch.randn(4, 1, 16, 16)
    bits = {"head": 2, "blocks.0.mlp.fc1.0": 4}
    compressed = compress_model(model, **PLAIN, bits=bits, calibration=images)
    reference = compress_model(model, **PLAIN, bits=bits, calibration=images)
    prepare_qat(compressed, clip=False)
    compressed.train()
    compressed(images).sum().backward()
    latent = compressed.net.head.parametrizations.weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0  # the rounding passed the gradient on
    with torch.no_grad():  # a step moves the latent weights; the forward still sees grid values
        latent.add_(torch.randn_like(latent) * latent.abs().max())
    on_grid = compressed.net.head.weight.detach()
    assert len(torch.unique(on_grid[0])) <= 3  # 2 bits: -s, 0, s per channel
    freeze_qat(compressed)
    assert torch.equal(compressed.net.head.weight, on_grid)
    export_compressed(compressed.eval(), tmp_path / "m.safetensors")
    loaded = load_compressed(tmp_path / "m.safetensors")
    assert torch.allclose(loaded(images), compressed(images), atol=1e-5)
    assert footprint(loaded) == footprint(reference)


def test_membrane_matching_compares_the_kept_channels_only():
    teacher = {"a": torch.arange(24.0).reshape(1, 2, 4, 3), "b": torch.ones(1, 2, 3)}
    kept = teacher["a"][:, :, [0, 2, 3], :]  # channel 1 (axis 2 of [T, N, C, L]) removed
    cut = {"a": ((2,), {1})}
    assert membrane_loss({"a": kept.clone(), "b": torch.ones(1, 2, 3)}, teacher, cut) == 0
    moved = membrane_loss({"a": kept + 1, "b": torch.ones(1, 2, 3)}, teacher, cut)
    assert moved == pytest.approx(0.5 * 1 / kept.pow(2).mean().item())  # layer a's error over its power; b: 0


def test_points_are_chosen_by_id_best_feasible_and_near_misses():
    from autocompress.searching import Constraints

    spec = validate_spec(make_spec_data())
    constraints = Constraints(baseline_accuracy=99.0, baseline_bytes=1000, max_drop_points=1.5, min_saving=0.5)
    base = {"memory_saving": 0.9, "memory_bytes": 100, "feasible": False}
    document = {"best": "best",
                "points": [{**base, "id": "best", "feasible": True, "accuracy_drop": 1.0},
                           {**base, "id": "close", "accuracy_drop": 4.0},
                           {**base, "id": "far", "accuracy_drop": 9.0},
                           {**base, "id": "small", "accuracy_drop": 2.0, "memory_saving": 0.2, "memory_bytes": 800}],
                "near_misses": []}
    assert select_points(document, spec.finetune, constraints) == ["best", "close"]
    assert select_points(document, spec.finetune, constraints, ["far"]) == ["far"]


def test_finetune_settings_are_validated():
    with pytest.raises(SpecError, match="finetune.data.root"):
        validate_spec(make_spec_data(**{"finetune.data.root": "/tmp"}))
    with pytest.raises(SpecError, match="warmup_epochs 3 must be below finetune.epochs 3"):
        validate_spec(make_spec_data(**{"finetune.epochs": 3, "finetune.warmup_epochs": 3}))
    with pytest.raises(SpecError, match="finetune.distillation.logits"):
        validate_spec(make_spec_data(**{"finetune.distillation.logits": 1.5}))
    assert validate_spec(make_spec_data()).finetune.auto is False


def test_a_search_fine_tunes_its_best_point_when_asked(tmp_path, capsys):
    data = make_spec_data(**{"space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
                             "budget.max_full_evaluations": 4, "model.args.depths": 2, "model.args.embed_dims": 32,
                             "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
                             "output.report": True,
                             "finetune": {"auto": True, "epochs": 1, "batch_size": 16,
                                          "points": {"near_misses_within": None},
                                          "data": {"images_per_epoch": 32}},
                             "constraints.accuracy.confidence": None})  # 40 images certify nothing at 95 %
    run = tmp_path / "run"
    assert main(["search", str(write_spec(tmp_path, data)), "--run-dir", str(run)]) == 0
    document = json.loads((run / "pareto.json").read_text())
    assert list(document["tuned"]["finetuned"]) == [document["best"]]
    assert document["tuned"]["finetuned"][document["best"]]["state"] == "done"
    assert "Fine-tuned points" in (run / "report.html").read_text()


def test_the_held_out_figures_of_a_tuned_point_are_said_with_their_drop():
    from autocompress.engine.finetune import held_out_text

    assert held_out_text({"holdout": None}) == ""
    assert held_out_text({"holdout": {"accuracy": 87.38, "accuracy_drop": 1.36}}) == "; held out 87.38 % (drop +1.36)"
    assert held_out_text({"holdout": {"accuracy": 87.38, "accuracy_drop": None}}) == "; held out 87.38 %"
