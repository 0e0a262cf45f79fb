"""Official checkpoints: read as the authors' train.py saves them, converted, and computing
exactly what the official code computes (tests/official_models.py, written from reading it)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from pydantic import TypeAdapter

import official_models as om
from autocompress.cli import main
from autocompress.compress import find_channel_groups
from autocompress.compress.verification import verify_group
from autocompress.errors import CheckpointError
from autocompress.models import create_model, load_checkpoint
from autocompress.spec import ModelSpec

ARGS = dict(T=2, in_channels=3, num_classes=10, embed_dims=64, num_heads=4, depths=2)
# (official network, its train.py arguments, autocompress family, family args, image size)
VARIANTS = {
    "spikformer-imagenet": (lambda: om.SpikformerImageNet(mlp_ratio=4.0, **ARGS), {},
                            "spikformer_imagenet", dict(mlp_ratio=4.0, **ARGS), 64),
    "spikformer-cifar": (lambda: om.SpikformerCIFAR(mlp_ratio=4.0, **ARGS),
                         {"time_step": 2, "num_heads": 4, "dim": 64, "layer": 2, "img_size": 32},
                         "spikformer_cifar", dict(mlp_ratio=4.0, **ARGS), 32),
    "sdt-imagenet": (lambda: om.SpikeDrivenTransformer(mlp_ratios=4.0, pooling_stat="1111", **ARGS),
                     {"time_steps": 2, "num_heads": 4, "pooling_stat": "1111", "img_size": 64},
                     "spike_driven_transformer", dict(mlp_ratio=4.0, pooling_stat="1111", **ARGS), 64),
    "sdt-cifar": (lambda: om.SpikeDrivenTransformer(mlp_ratios=4.0, pooling_stat="0011", **ARGS),
                  {"time_steps": 2, "num_heads": 4, "pooling_stat": "0011", "img_size": 32},
                  "spike_driven_transformer", dict(mlp_ratio=4.0, pooling_stat="0011", **ARGS), 32),
}


def official(variant: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return om.randomize(VARIANTS[variant][0]().double(), seed)


def family_model(variant: str, family: str | None = None, image_size: int | None = None):
    _, _, default_family, args, size = VARIANTS[variant]
    spec = TypeAdapter(ModelSpec).validate_python(
        {"family": family or default_family, "args": {**args, "image_size": image_size or size}})
    return create_model(spec).double()


def images(variant: str, n: int = 6) -> torch.Tensor:
    size = VARIANTS[variant][4]
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_converted_official_checkpoint_gives_identical_float64_logits(variant, tmp_path):
    reference, ema = official(variant), official(variant, seed=1)
    path = tmp_path / "model_best.pth.tar"
    om.save_like_timm(path, reference, VARIANTS[variant][1], ema_model=ema)
    x = images(variant)
    with torch.no_grad():
        expected = reference(x)
        rates = [m.rate for m in reference.modules() if isinstance(m, om.LIF)]
        expected_ema = ema(x)
    assert min(rates) > 0.005, "every layer of the official network must spike for the comparison to mean anything"
    assert len(set(expected.argmax(1).tolist())) > 1 or expected.std(0).max() > 0.01

    ours = family_model(variant)
    summary = load_checkpoint(ours.net, path, family=VARIANTS[variant][2])
    assert summary and "converted an official" in summary
    with torch.no_grad():
        assert torch.equal(ours(x), expected)
    ours_ema = family_model(variant)
    load_checkpoint(ours_ema.net, path, family=VARIANTS[variant][2], ema=True)
    with torch.no_grad():
        assert torch.equal(ours_ema(x), expected_ema) and not torch.equal(expected_ema, expected)


@pytest.mark.parametrize("variant", ["spikformer-imagenet", "spikformer-cifar"])
def test_spikingjelly_stem_order_computes_another_network(variant, tmp_path):
    reference = official(variant)
    path = tmp_path / "model.pth"
    torch.save(reference.state_dict(), path)
    ours = family_model(variant)
    load_checkpoint(ours.net, path, family=VARIANTS[variant][2])
    # SpikingJelly's Spikformer has the same tensor names: load the converted weights into it
    spikingjelly = family_model(variant, family="spikingjelly_spikformer")
    spikingjelly.net.load_state_dict(ours.net.state_dict())
    x = images(variant)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))
        assert not torch.allclose(spikingjelly(x), reference(x), atol=1e-6)


def test_official_layout_in_the_wrong_family_is_refused_with_the_fitting_one(tmp_path):
    path = tmp_path / "model_best.pth.tar"
    om.save_like_timm(path, official("spikformer-imagenet"), {})
    wrong = family_model("spikformer-imagenet", family="spikingjelly_spikformer")
    with pytest.raises(CheckpointError, match="fits model.family spikformer_imagenet, not spikingjelly_spikformer"):
        load_checkpoint(wrong.net, path, family="spikingjelly_spikformer")
    with pytest.raises(CheckpointError, match="no state_dict_ema or model_ema entry"):
        load_checkpoint(family_model("spikformer-imagenet").net, path, family="spikformer_imagenet", ema=True)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_code_payload_in_a_timm_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": official("sdt-cifar").state_dict(), "args": argparse.Namespace(lr=1.0),
                "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(family_model("sdt-cifar").net, path, family="spike_driven_transformer")
    message = str(caught.value)
    assert "builtins.exec" in message and "not loaded" in message and "\x1b" not in message
    assert "weights_only=False" not in message
    assert not marker.exists()


def test_inspect_checkpoint_names_family_variant_and_spec(tmp_path, capsys):
    path = tmp_path / "checkpoint-299.pth.tar"
    om.save_like_timm(path, official("sdt-cifar"), VARIANTS["sdt-cifar"][1])
    assert main(["inspect-checkpoint", str(path), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["layout"] == "sdt-v1" and found["variant"] == "SDT-2-64" and found["family"] == "spike_driven_transformer"
    assert found["model"]["args"] == {"in_channels": 3, "num_classes": 10, "embed_dims": 64, "depths": 2,
                                      "mlp_ratio": 4.0, "T": 2, "num_heads": 4, "image_size": 32,
                                      "pooling_stat": "0011"}
    assert found["transform_preset"] == "cifar10" and found["assumed"] == []
    assert found["file"].startswith("timm-style checkpoint (entries: epoch, arch, state_dict, optimizer")
    assert main(["inspect-checkpoint", str(path)]) == 0
    assert "family: spike_driven_transformer" in capsys.readouterr().out
    plain = tmp_path / "plain.pt"
    torch.save(official("spikformer-imagenet").state_dict(), plain)
    assert main(["inspect-checkpoint", str(plain), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["family"] == "spikformer_imagenet" and found["variant"] == "Spikformer-2-64"
    assert found["file"] == "state dict"
    assert set(found["assumed"]) == {"num_heads", "image_size"}  # the weights do not say; T is fixed at 4 there
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really")
    assert main(["inspect-checkpoint", str(bad)]) == 2
    assert "not a readable PyTorch" in capsys.readouterr().err


def test_official_spikformer_imagenet_groups_verify(tmp_path):
    model = family_model("spikformer-imagenet").float()
    x = images("spikformer-imagenet").float()
    groups = find_channel_groups(model).groups
    assert sorted({g.kind for g in groups}) == ["attention_qk", "attention_v", "mlp", "residual", "stem"]
    assert sum(g.kind == "stem" for g in groups) == 3
    for group in groups:
        assert verify_group(model, group, x) is None, group.name


def test_saved_state_dict_of_our_family_loads_unconverted(tmp_path):
    model = family_model("spikformer-cifar")
    path = tmp_path / "ours.pt"
    torch.save(model.net.state_dict(), path)
    again = family_model("spikformer-cifar")
    assert load_checkpoint(again.net, path, family="spikformer_cifar") is None
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), model.net.state_dict().values()))


def test_inspect_checkpoint_says_unknown_for_a_plain_spikingjelly_state_dict(tmp_path, capsys):
    """SpikingJelly's Spikformer and the official-code families share these tensor names but not their
    function: the file does not say which it is, nor its heads or image size, so nothing is guessed."""
    from conftest import make_spec_data

    from autocompress.spec import validate_spec

    spec = validate_spec(make_spec_data(**{"model.args.in_channels": 1}), base_dir=tmp_path)
    plain = tmp_path / "sj.pt"
    torch.save(create_model(spec.model).net.state_dict(), plain)
    assert main(["inspect-checkpoint", str(plain), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["layout"] == "unknown" and found["family"] is None and found["model"] is None
    assert found["determined"] == {"in_channels": 1, "num_classes": 10, "embed_dims": 16, "depths": 1,
                                   "mlp_ratio": 2.0}
    assert {"family", "T", "num_heads", "image_size"} <= set(found["undetermined"])
    assert main(["inspect-checkpoint", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "layout:      unknown" in out and "no spec section is proposed" in out and "family:" not in out
