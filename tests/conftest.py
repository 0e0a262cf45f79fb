from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "experiments" / "digits" / "spec.yaml"

TINY_SPIKFORMER = {
    "T": 2, "in_channels": 1, "image_size": 16, "patch_size": 4, "num_classes": 10,
    "embed_dims": 16, "num_heads": 2, "mlp_ratio": 2.0, "depths": 1,
}
TINY_SDT = {
    "T": 2, "in_channels": 1, "image_size": 16, "num_classes": 10,
    "embed_dims": 16, "num_heads": 2, "mlp_ratio": 2.0, "depths": 1, "pooling_stat": "0011",
}
TINY_ARGS = {"spikformer": TINY_SPIKFORMER, "spike_driven_transformer": TINY_SDT}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Reference models and caches go to a temporary folder, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory):
    """A cache holding the trained digits reference model (trained once per test run)."""
    from autocompress.reference.train import ensure_reference

    cache = tmp_path_factory.mktemp("reference-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOCOMPRESS_CACHE", str(cache))
        ensure_reference("digits-spikformer", progress=False, say=lambda _m: None)
    return cache


@pytest.fixture
def demo_spec_data() -> dict:
    return yaml.safe_load(DEMO_SPEC.read_text())


def make_spec_data(family: str = "spikformer", **overrides) -> dict:
    """A small valid spec (digits, tiny model, no checkpoint) as a mapping."""
    data = {
        "name": "tiny",
        "model": {"family": family, "args": copy.deepcopy(TINY_ARGS[family])},
        "data": {"dataset": "digits", "image_size": 16, "validation": {"limit": 40}, "calibration": {"size": 8}},
        "constraints": {"accuracy": {"max_drop": 1.5}, "memory": {"min_saving": 0.5}},
        "execution": {"device": "cpu"},
    }
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
