"""experiments/imagenet: the papers' ImageNet specs stay runnable. Each one is pointed at
a fake ImageNet validation folder (a few generated JPEGs in the ImageNet layout) and a
tiny checkpoint in the official code's layout, saved as its train.py saves it (a timm
checkpoint dict with an argparse.Namespace), through `--set`, validated, evaluated,
grouped and searched end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import official_models as om
from conftest import REPO

IMAGENET = REPO / "experiments" / "imagenet"
SPECS = sorted(IMAGENET.glob("*.yaml"))
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
TINY = {"data.image_size": 32, "model.args.embed_dims": 16,
        "model.args.num_heads": 2, "model.args.depths": 1, "model.args.mlp_ratio": 2.0, "model.args.T": 2,
        "model.args.num_classes": 1000, "data.calibration.size": 4, "data.batch_size": 8, "data.workers": 0,
        "execution.workers": 0, "execution.device": "cpu"}
OFFICIAL = {  # the official network of each family, at TINY's size, with ImageNet's 1,000-way head
    "spikformer_imagenet": lambda: om.SpikformerImageNet(T=2, num_classes=1000, embed_dims=16, num_heads=2,
                                                         mlp_ratio=2.0, depths=1),
    "spike_driven_transformer": lambda: om.SpikeDrivenTransformer(T=2, num_classes=1000, embed_dims=16,
                                                                  num_heads=2, mlp_ratios=2.0, depths=1),
}


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    val = root / "val"
    for c, wnid in enumerate(WNIDS):
        (val / wnid).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(40 + 7 * c, 52, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(val / wnid / f"ILSVRC2012_val_{c * 4 + i:08d}.JPEG")
    checkpoints = {}
    for family, build in OFFICIAL.items():
        torch.manual_seed(0)
        checkpoints[family] = root / f"{family}-model_best.pth.tar"
        om.save_like_timm(checkpoints[family], om.randomize(build()), {})
    return val, checkpoints


def _sets(val: Path, checkpoint: Path) -> list[str]:
    args = [f"--set=data.root={val}", f"--set=model.checkpoint={checkpoint}"]
    return args + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]


def test_the_specs_mirror_the_papers():
    names = {spec.stem: yaml.safe_load(spec.read_text()) for spec in SPECS}
    assert set(names) == {"primesvt_prune", "aq4svit_greedy", "aq4svit_beam", "joint", "sdt_joint"}
    for data in names.values():
        args = data["model"]["args"]
        assert (args["embed_dims"], args["depths"], args["T"], data["data"]["image_size"]) == (512, 8, 4, 224)
        assert data["data"]["dataset"] == "imagefolder"
        official = "spikformer_imagenet" if data["model"]["family"] == "spikformer_imagenet" else "sdt_imagenet"
        assert data["model"]["family"] in OFFICIAL and data["data"]["transform"]["preset"] == official
    assert names["primesvt_prune"]["space"]["search"] == "prune"
    assert names["primesvt_prune"]["constraints"]["accuracy"]["max_drop"] == 3.0
    assert names["primesvt_prune"]["strategy"]["name"] == "prioritized"
    for name, strategy in (("aq4svit_greedy", "greedy"), ("aq4svit_beam", "beam")):
        assert names[name]["space"]["search"] == "quantize" and names[name]["strategy"]["name"] == strategy
        assert names[name]["constraints"]["accuracy"]["max_drop"] == 1.5
    assert names["joint"]["space"]["search"] == "joint"


def test_without_inputs_validate_names_them(cli):
    done = cli("validate", str(IMAGENET / "joint.yaml"))
    assert done.returncode == 2
    assert "model.checkpoint: checkpoint file not found" in done.stderr and "data.root: data root not found" in done.stderr


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_imagenet_spec_runs_on_a_fake_imagenet(spec, fake_imagenet, tmp_path, cli):
    val, checkpoints = fake_imagenet
    sets = _sets(val, checkpoints[yaml.safe_load(spec.read_text())["model"]["family"]])
    done = cli("validate", str(spec), *sets)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    if spec.stem in ("joint", "sdt_joint"):  # the official checkpoint is converted; evaluate and groups run on it
        done = cli("evaluate", str(spec), *sets, "--json")
        assert done.returncode == 0 and "converted an official" in done.stderr, done.stderr
        result = json.loads(done.stdout)  # 4 of the 1,000 classes: their labels are ImageNet's
        assert result["evaluation"]["total"] == 4 * len(WNIDS) - TINY["data.calibration.size"]
        assert "4 of ImageNet-1k's 1,000 classes" in result["data"]
        done = cli("groups", str(spec), *sets)
        assert done.returncode == 0 and "attention" in done.stdout, done.stderr
    run = tmp_path / "run"
    done = cli("search", str(spec), *sets, "--run-dir", str(run), "--max-full-evaluations", "3")
    assert done.returncode == 0, done.stderr
    document = json.loads((run / "pareto.json").read_text())
    assert document["state"] == "done" and 1 <= document["statistics"]["full_evaluations"] <= 3
    assert document["statistics"]["strategy"] == yaml.safe_load(spec.read_text())["strategy"]["name"]
    assert document["baseline"]["memory_bytes"] > 0 and document["points"]


def test_bench_results_hold_every_benchmark_with_its_command():
    text = (REPO / "experiments" / "bench" / "RESULTS.md").read_text()
    for name in ("gate", "strategies", "proxy", "eval_overhead", "ray_scaling", "pruned_speed", "proxy_memory",
                 "early_stopping", "probe_cost", "dashboard"):
        assert f"<!-- bench:{name} -->" in text and f"<!-- /bench:{name} -->" in text, name
        section = text.split(f"<!-- bench:{name} -->")[1].split(f"<!-- /bench:{name} -->")[0]
        assert f"Re-run: `python experiments/bench/{name}.py" in section and "Machine: " in section
        assert (REPO / "experiments" / "bench" / f"{name}.py").is_file()


def test_init_writes_a_spec_that_validates_and_searches_unedited(fake_imagenet, tmp_path, cli):
    """`autocompress init` on an official-layout Spikformer checkpoint (timm-style, random
    weights) and an ImageNet-layout folder: the spec it writes validates and searches 3 full
    evaluations as written; a second init refuses to overwrite it."""
    val, checkpoints = fake_imagenet
    spec = tmp_path / "my.yaml"
    done = cli("init", "--checkpoint", str(checkpoints["spikformer_imagenet"]), "--data", str(val), "--out", str(spec))
    assert done.returncode == 0, done.stderr
    text = spec.read_text()
    data = yaml.safe_load(text)
    assert data["model"]["family"] == "spikformer_imagenet" and data["data"]["dataset"] == "imagefolder"
    assert data["model"]["args"]["embed_dims"] == 16 and data["data"]["transform"]["preset"] == "spikformer_imagenet"
    assert "# " in text and str(val) in text
    assert cli("validate", str(spec)).stdout == "ok\n"
    run = tmp_path / "run"
    done = cli("search", str(spec), "--run-dir", str(run), "--max-full-evaluations", "3", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["state"] == "done" and document["statistics"]["full_evaluations"] == 3
    again = cli("init", "--checkpoint", str(checkpoints["spikformer_imagenet"]), "--data", str(val), "--out", str(spec))
    assert again.returncode == 2 and "--force" in again.stderr


def test_the_early_stopping_ceiling_reads_reported_points_whole_and_stops_the_rest_when_certain(monkeypatch):
    """The benchmark's ceiling (the best any test can save on a path): reported candidates
    read whole, one far beyond the limit stopped at the first look, one at the limit read whole."""
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "bench"))
    from early_stopping import ceiling

    from autocompress.searching import Constraints

    rng = np.random.default_rng(0)
    n = 5000
    base = rng.random(n) < 0.9

    def worse_by(points: float) -> np.ndarray:
        out = base.copy()
        out[rng.choice(np.flatnonzero(base), int(points / 100 * n), replace=False)] = False
        return out

    correct = {"point": worse_by(0.5), "broken": worse_by(30.0), "at-limit": worse_by(1.5)}
    memory = {"point": 100, "broken": 50, "at-limit": 60}
    constraints = Constraints(100.0 * base.mean(), 1000, 1.5, 0.8)
    ids = list(correct)
    assert ceiling(base, correct, memory, ids, constraints, 250, {"point"}) == n + 250 + n
    # the at-limit candidate, larger than a more accurate reported point, is dominated early
    memory["at-limit"] = 200
    assert n + 250 + 250 <= ceiling(base, correct, memory, ids, constraints, 250, {"point"}) < 3 * n


@pytest.mark.slow
def test_the_gpu_check_runs_every_check_on_the_cpu_in_its_dry_run():
    """experiments/bench/gpu_check.py is the one script a lent GPU runs; its dry run is the
    same code on the CPU with tiny sizes, so it cannot rot between GPU sessions (its Ray
    rows run on the two-node test cluster: tests/test_cluster.py)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "experiments/bench/gpu_check.py", "--dry-run", "--no-ray"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    checks = [row.split(" | ")[0][2:] for row in rows]
    assert [c for c in checks if c.startswith("validation, ")] == [
        "validation, fp32", "validation, fp32, channels_last", "validation, bf16", "validation, bf16, channels_last",
        "validation, fp16", "validation, fp16, channels_last"]
    assert {"decoded cache: pinned, non-blocking reads", "a probe's peak memory, 4 calibration images",
            "a probe's peak memory, 8 calibration images", "energy counter on the device against the CPU"} <= set(checks)
    assert "FAILED" not in done.stdout and "dry run on the CPU" in done.stdout

