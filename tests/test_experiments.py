"""experiments/imagenet: the papers' ImageNet specs stay runnable. Each one is pointed at
a fake ImageNet validation folder (a few generated JPEGs in the ImageNet layout) and a
tiny Spikformer checkpoint through `--set`, validated, and searched end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from autocompress.models import create_model
from conftest import REPO

IMAGENET = REPO / "experiments" / "imagenet"
SPECS = sorted(IMAGENET.glob("*.yaml"))
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
TINY = {"model.args.image_size": 32, "data.image_size": 32, "model.args.patch_size": 4, "model.args.embed_dims": 16,
        "model.args.num_heads": 2, "model.args.depths": 1, "model.args.mlp_ratio": 2.0, "model.args.T": 2,
        "model.args.num_classes": len(WNIDS), "data.calibration.size": 4, "data.batch_size": 8, "data.workers": 0,
        "execution.workers": 0, "execution.device": "cpu"}


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    val = root / "val"
    for c, wnid in enumerate(WNIDS):
        (val / wnid).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(40 + 7 * c, 52, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(val / wnid / f"ILSVRC2012_val_{c * 4 + i:08d}.JPEG")
    section = yaml.safe_load(SPECS[0].read_text())["model"]
    for key, value in TINY.items():
        if key.startswith("model.args."):
            section["args"][key.rsplit(".", 1)[1]] = value
    model = _tiny_model(section)
    checkpoint = root / "tiny-spikformer.pt"
    torch.save(model.net.state_dict(), checkpoint)
    return val, checkpoint


def _tiny_model(model_section: dict):
    from pydantic import TypeAdapter

    from autocompress.spec import ModelSpec

    return create_model(TypeAdapter(ModelSpec).validate_python({**model_section, "checkpoint": None}))


def _sets(val: Path, checkpoint: Path) -> list[str]:
    args = [f"--set=data.root={val}", f"--set=model.checkpoint={checkpoint}"]
    return args + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autocompress", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


def test_the_specs_mirror_the_papers():
    names = {spec.stem: yaml.safe_load(spec.read_text()) for spec in SPECS}
    assert set(names) == {"primesvt_prune", "aq4svit_greedy", "aq4svit_beam", "joint"}
    for data in names.values():
        args = data["model"]["args"]
        assert (args["embed_dims"], args["depths"], args["T"], args["image_size"]) == (512, 8, 4, 224)
        assert data["data"]["dataset"] == "imagefolder"
    assert names["primesvt_prune"]["space"]["search"] == "prune"
    assert names["primesvt_prune"]["constraints"]["accuracy"]["max_drop"] == 3.0
    assert names["primesvt_prune"]["strategy"]["name"] == "prioritized"
    for name, strategy in (("aq4svit_greedy", "greedy"), ("aq4svit_beam", "beam")):
        assert names[name]["space"]["search"] == "quantize" and names[name]["strategy"]["name"] == strategy
        assert names[name]["constraints"]["accuracy"]["max_drop"] == 1.5
    assert names["joint"]["space"]["search"] == "joint"


def test_without_inputs_validate_names_them():
    done = _cli("validate", str(IMAGENET / "joint.yaml"))
    assert done.returncode == 2
    assert "model.checkpoint: checkpoint file not found" in done.stderr and "data.root: data root not found" in done.stderr


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_imagenet_spec_runs_on_a_fake_imagenet(spec, fake_imagenet, tmp_path):
    val, checkpoint = fake_imagenet
    sets = _sets(val, checkpoint)
    done = _cli("validate", str(spec), *sets)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    run = tmp_path / "run"
    done = _cli("search", str(spec), *sets, "--run-dir", str(run), "--max-full-evaluations", "3")
    assert done.returncode == 0, done.stderr
    document = json.loads((run / "pareto.json").read_text())
    assert document["state"] == "done" and 1 <= document["statistics"]["full_evaluations"] <= 3
    assert document["statistics"]["strategy"] == yaml.safe_load(spec.read_text())["strategy"]["name"]
    assert document["baseline"]["memory_bytes"] > 0 and document["points"]


def test_bench_results_hold_every_benchmark_with_its_command():
    text = (REPO / "experiments" / "bench" / "RESULTS.md").read_text()
    for name in ("gate", "strategies", "proxy", "eval_overhead", "ray_scaling", "pruned_speed"):
        assert f"<!-- bench:{name} -->" in text and f"<!-- /bench:{name} -->" in text, name
        section = text.split(f"<!-- bench:{name} -->")[1].split(f"<!-- /bench:{name} -->")[0]
        assert f"Re-run: `python experiments/bench/{name}.py" in section and "Machine: " in section
        assert (REPO / "experiments" / "bench" / f"{name}.py").is_file()
