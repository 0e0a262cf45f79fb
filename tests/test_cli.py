"""The command line as a user drives it: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
import torch
import yaml

from autocompress.cli import main
from autocompress.models import create_model
from autocompress.spec import validate_spec
from conftest import DEMO_SPEC, HANG_GUARD, REPO, make_spec_data, write_spec


def run_cli(*args: str, timeout: float = HANG_GUARD) -> subprocess.CompletedProcess:
    """``python -m autocompress ARGS`` in a fresh process, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "autocompress", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_validate_demo_prints_ok():
    done = run_cli("validate", str(DEMO_SPEC))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("batch_size: 128", "batchsize: 128", "data.batchsize"),
        ("max_drop: 1.5", "max_drop: -0.5", "constraints.accuracy.max_drop"),
        ("name: greedy, seed: 0", "name: hillclimb, seed: 0", "strategy.name"),
        ("checkpoint: reference:digits-spikformer", "checkpoint: weights/missing.pt", "model.checkpoint"),
    ],
)
def test_validate_bad_spec_exits_2_naming_the_field(tmp_path, old, new, field):
    text = DEMO_SPEC.read_text()
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new))
    done = run_cli("validate", str(path))
    assert done.returncode == 2
    assert f"  {field}: " in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_schema_is_json_the_demo_validates_against():
    done = run_cli("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    jsonschema.validate(yaml.safe_load(DEMO_SPEC.read_text()), schema)


@pytest.fixture
def tiny_checkpointed_spec(tmp_path):
    data = make_spec_data(**{"model.checkpoint": "tiny.pt"})
    torch.manual_seed(0)
    model = create_model(validate_spec(make_spec_data(), base_dir=tmp_path).model)
    torch.save(model.net.state_dict(), tmp_path / "tiny.pt")
    return write_spec(tmp_path, data)


def test_evaluate_prints_accuracy_and_footprint(tiny_checkpointed_spec, capsys):
    assert main(["evaluate", str(tiny_checkpointed_spec)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"test accuracy: \d+\.\d\d % top-1 \(\d+/40 images", out)
    assert re.search(r"footprint: +\d+ bytes", out)


def test_evaluate_json(tiny_checkpointed_spec, capsys):
    assert main(["evaluate", str(tiny_checkpointed_spec), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["evaluation"]["total"] == 40
    assert result["footprint_bytes"] > 0 and result["model"] == "spikformer"


def test_evaluate_with_mismatched_checkpoint_exits_2(tmp_path, capsys):
    wide = validate_spec(make_spec_data(**{"model.args.embed_dims": 32}), base_dir=tmp_path)
    torch.save(create_model(wide.model).net.state_dict(), tmp_path / "wide.pt")
    spec_path = write_spec(tmp_path, make_spec_data(**{"model.checkpoint": "wide.pt"}))
    assert main(["evaluate", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "patch_embed.stages.0.conv_bn.block.0.weight" in err


def test_train_reference_list(capsys):
    assert main(["train-reference", "--list"]) == 0
    assert "digits-spikformer: " in capsys.readouterr().out


@pytest.mark.slow
def test_demo_command_trains_once_then_searches(isolated_cache, tmp_path):
    """The README's demo (`make demo` = `autocompress search` on the demo spec): train
    the reference on first use, search, print the Pareto table; then reuse the cache."""
    first = run_cli("search", str(DEMO_SPEC), "--run-dir", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr
    assert "training reference model 'digits-spikformer'" in first.stderr
    baseline = re.search(r"baseline (\d+\.\d+) % top-1, ([\d,]+) bytes", first.stderr)
    assert float(baseline.group(1)) >= 95.0 and baseline.group(2) == "661,808"
    assert "Pareto set" in first.stdout and "best feasible point:" in first.stdout
    assert (isolated_cache / "references" / "digits-spikformer.pt").is_file()
    second = run_cli("evaluate", str(DEMO_SPEC))
    assert second.returncode == 0
    assert "training reference model" not in second.stderr
    assert f"test accuracy: {baseline.group(1)} %" in second.stdout
    assert re.search(r"footprint: +661808 bytes", second.stdout)


def test_groups_lists_units_of_the_demo_model(tmp_path):
    data = make_spec_data()
    done = run_cli("groups", str(write_spec(tmp_path, data)), "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    names = {g["name"] for g in listing["groups"]}
    assert {"blocks.0.mlp.hidden", "blocks.0.attn.qk", "blocks.0.attn.v", "residual"} <= names
    assert listing["left_out"] == [] and "head" in listing["layers"]


def test_groups_reports_what_qkformer_leaves_out(tmp_path):
    """The QKFormer example: a custom factory beside its spec, traced and verified."""
    done = subprocess.run(
        [sys.executable, "-m", "autocompress", "groups", str(REPO / "experiments" / "qkformer" / "spec.yaml")],
        capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD,
    )
    assert done.returncode == 0, done.stderr
    assert "stage3.0.mlp.fc1.out" in done.stdout
    assert re.search(r"\d+ groups left out .*\n  head\.out: ", done.stdout)
    assert "stage1.0.attn.qk_conv_bn.0.out: " in done.stdout


@pytest.mark.slow
def test_search_command_writes_pareto_json(reference_cache, tmp_path):
    text = DEMO_SPEC.read_text().replace("granularity: block", "granularity: network")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(text)
    env = {**os.environ, "AUTOCOMPRESS_CACHE": str(reference_cache)}
    done = subprocess.run([sys.executable, "-m", "autocompress", "search", str(spec_path), "--run-dir", str(tmp_path / "run"),
                           "--max-full-evaluations", "20"], capture_output=True, text=True, timeout=HANG_GUARD, env=env)
    assert done.returncode == 0, done.stderr
    assert "Pareto set" in done.stdout and "best feasible point:" in done.stdout
    document = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert document["statistics"]["full_evaluations"] <= 20
    best = next(p for p in document["points"] if p["id"] == document["best"])
    assert best["feasible"] and best["memory_saving"] >= 0.8 and best["accuracy_drop"] <= 1.5
    assert set(best["config"]) == {"prune", "bits"} and document["baseline"]["memory_bytes"] == 661808
