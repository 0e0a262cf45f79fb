"""Model families from the registry, the uniform forward, and checkpoint loading."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from autocompress.compress import baseline_footprint
from autocompress.data import load_data
from autocompress.evaluation import evaluate_accuracy
from autocompress.errors import CheckpointError, ModelError
from autocompress.models import create_model, family_names, load_checkpoint, read_state_dict
from autocompress.spec import validate_spec
from conftest import TINY_ARGS, make_spec_data

BUILTIN = sorted(TINY_ARGS)


def test_registry_covers_every_spec_family():
    assert set(family_names()) == {"spikformer_imagenet", "spikformer_cifar", "spike_driven_transformer",
                                   "spikingjelly_spikformer", "spikformer", "custom"}


@pytest.fixture(params=BUILTIN)
def spec(request, tmp_path):
    return validate_spec(make_spec_data(request.param), base_dir=tmp_path)


def test_build_and_evaluate_on_digits(spec):
    torch.manual_seed(0)
    model = create_model(spec.model)
    assert len(model.spiking_neurons()) >= 4
    data = load_data(spec.data)
    result = evaluate_accuracy(model, data, batch_size=16)
    assert result.total == 40 and 0 <= result.correct <= 40
    assert result.accuracy == pytest.approx(100 * result.correct / 40)
    # deterministic: neuron state is reset, so the same data gives the same numbers
    assert evaluate_accuracy(model, data, batch_size=7).correct == result.correct


def test_uniform_forward_shape_and_state_reset(spec):
    torch.manual_seed(0)
    model = create_model(spec.model)
    x = torch.randn(5, 1, 16, 16)
    with torch.inference_mode():
        first, second = model(x), model(x)
    assert first.shape == (5, 10)
    assert torch.equal(first, second)
    assert all(isinstance(node.v, float) or node.v.abs().sum() == 0 for _, node in model.spiking_neurons())


def test_checkpoint_round_trip(spec, tmp_path):
    torch.manual_seed(1)
    trained = create_model(spec.model)
    path = tmp_path / "m.pt"
    torch.save(trained.net.state_dict(), path)
    fresh = create_model(spec.model)
    load_checkpoint(fresh.net, path)
    x = torch.randn(3, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(trained(x), fresh(x))


def test_wrapped_and_ddp_checkpoints_load(spec, tmp_path):
    state = create_model(spec.model).net.state_dict()
    path = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in state.items()}}, path)
    assert read_state_dict(path).keys() == state.keys()


def test_wrong_shape_is_refused_with_the_key_named(tmp_path):
    small = validate_spec(make_spec_data(), base_dir=tmp_path)
    wide = validate_spec(make_spec_data(**{"model.args.embed_dims": 32}), base_dir=tmp_path)
    path = tmp_path / "wide.pt"
    torch.save(create_model(wide.model).net.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(create_model(small.model).net, path)
    message = str(info.value)
    assert str(path) in message and "shape mismatch" in message
    assert "patch_embed.stages.0.conv_bn.block.0.weight (checkpoint (4, 1, 3, 3), model (2, 1, 3, 3))" in message


def test_missing_and_unexpected_keys_are_named(tmp_path):
    spec = validate_spec(make_spec_data(), base_dir=tmp_path)
    state = create_model(spec.model).net.state_dict()
    del state["head.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys: head\.weight.*unexpected keys: extra\.weight"):
        load_checkpoint(create_model(spec.model).net, path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _torch_saved_payload() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "hook": Payload()}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"this is not a checkpoint", "not a file torch.save writes"),
        (bytes(range(256)) * 4, "not a file torch.save writes"),  # random-looking bytes
        (b"", "the file is empty"),
        (pickle.dumps(Payload()), "not a readable PyTorch state-dict file"),
        (_torch_saved_payload(), r"holds Python objects other than tensors and plain data \(builtins.print\)"),
        (None, "file not found"),
    ],
    ids=["garbage-bytes", "random-bytes", "empty", "pickled-code", "torch-saved-code", "missing-file"],
)
def test_unreadable_or_unsafe_checkpoints_are_refused(tmp_path, capsys, content, needle):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle) as info:
        read_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out
    message = str(info.value)
    assert "\x1b" not in message and "weights_only=False" not in message and "will likely succeed" not in message
    assert "torch.save(model.state_dict(), path)" in message or content is None


def test_non_state_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_state_dict(path)


def test_custom_factory(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    data = make_spec_data()
    data["model"] = {"family": "custom", "factory": "custom_models:tiny_spikformer", "args": {"embed_dims": 16}}
    model = create_model(validate_spec(data, base_dir=tmp_path).model)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize(
    ("factory", "args", "needle"),
    [
        ("custom_models:not_a_module", {}, "returned str, not a torch.nn.Module"),
        ("custom_models:no_neurons", {}, "has no SpikingJelly neurons"),
        ("custom_models:tiny_spikformer", {"width": 3}, "does not accept these arguments"),
        ("custom_models:absent", {}, "has no callable 'absent'"),
        ("no_such_module:build", {}, "cannot import module 'no_such_module'"),
    ],
)
def test_custom_factory_errors(tmp_path, factory, args, needle):
    data = make_spec_data()
    data["model"] = {"family": "custom", "factory": factory, "args": args}
    with pytest.raises(ModelError, match=needle):
        create_model(validate_spec(data, base_dir=tmp_path).model)


def test_baseline_footprint_counts_parameters_and_buffers(tmp_path):
    model = create_model(validate_spec(make_spec_data(), base_dir=tmp_path).model)
    params = sum(p.numel() * 4 for p in model.parameters())
    floats = sum(b.numel() * 4 for b in model.buffers() if b.dtype == torch.float32)
    counters = sum(8 for b in model.buffers() if b.dtype == torch.int64)  # BN num_batches_tracked
    assert counters > 0
    assert baseline_footprint(model) == params + floats + counters


def test_every_family_is_one_name_everywhere():
    """The families the spec accepts are the ones the registry builds: the declared ones
    (each built-in with a default search space file), their aliases, and custom."""
    from typing import get_args

    from autocompress.engine.space_file import default_space_file
    from autocompress.spec import family_info
    from autocompress.spec import family_names as declared
    from autocompress.spec.model import model_section_union
    from autocompress.vocabulary import FAMILY_ALIASES

    union = get_args(get_args(model_section_union())[0])
    in_spec = {tag for member in union for tag in get_args(member.model_fields["family"].annotation)}
    assert in_spec == set(family_names()) == set(declared()) | set(FAMILY_ALIASES)
    for family in set(declared()) | set(FAMILY_ALIASES):
        assert default_space_file(family).is_file() and family_info(family).space


def test_a_family_registered_in_a_test_validates_groups_loads_its_layout_and_searches(tmp_path, capsys):
    """One registration (timm's @register_model style) gives a family everything: the spec
    accepts it with its args and checks them against the data and the caps, its default
    search space, its checkpoint converter and channel-group discovery; then validate,
    groups and a short search run on it through the CLI and the engine."""
    import json

    import yaml
    from pydantic import BaseModel, ConfigDict
    from spikingjelly.activation_based.model import Spikformer

    from autocompress.cli import main
    from autocompress.compress.rules import _spikformer_mlp
    from autocompress.engine import start_search
    from autocompress.errors import SpecError
    from autocompress.models import register_family
    from autocompress.spec import family_info, spec_json_schema

    class VariantArgs(BaseModel):
        model_config = ConfigDict(extra="forbid")
        T: int = 2
        in_channels: int = 1
        image_size: int = 16
        num_classes: int = 10
        embed_dims: int = 16
        num_heads: int = 2
        mlp_ratio: float = 2.0
        depths: int = 1

    seen = []

    def counting_mlp_rule(walk, module, path):  # the built-in rule, counted: the registered rule is consulted
        seen.append(path("fc1_conv"))
        _spikformer_mlp(walk, module, path)

    from spikingjelly.activation_based.model.spikformer import SpikformerMLP

    class VariantMLP(SpikformerMLP):
        pass

    def from_variant_layout(state):  # its checkpoints prefix every name with "variant."
        if not all(key.startswith("variant.") for key in state):
            return None
        return {key[len("variant."):]: value for key, value in state.items()}, "renamed from the variant layout"

    @register_family("test_variant_spikformer", args=VariantArgs, space="spikformer", converter=from_variant_layout,
                     block_rules=((VariantMLP, counting_mlp_rule),))
    def build(model_spec):
        a = model_spec.args
        net = Spikformer(T=a.T, in_channels=a.in_channels, img_size_h=a.image_size, img_size_w=a.image_size,
                         patch_size=4, num_classes=a.num_classes, embed_dims=a.embed_dims, num_heads=a.num_heads,
                         mlp_ratio=a.mlp_ratio, depths=a.depths)
        for module in net.modules():
            if type(module) is SpikformerMLP:
                module.__class__ = VariantMLP
        return net

    assert family_info("test_variant_spikformer").space == "spikformer"
    assert "test_variant_spikformer" in json.dumps(spec_json_schema())
    data = make_spec_data(**{"model": {"family": "test_variant_spikformer", "args": {}},
                             "budget.max_full_evaluations": 2, "space.granularity": "network"})
    # its args are checked against the data (digits: 1 channel) and the caps
    with pytest.raises(SpecError, match="in_channels"):
        validate_spec({**data, "model": {"family": "test_variant_spikformer", "args": {"in_channels": 3}}},
                      base_dir=tmp_path)
    spec = validate_spec(data, base_dir=tmp_path)
    torch.manual_seed(0)
    model = create_model(spec.model)
    torch.save({f"variant.{k}": v for k, v in model.net.state_dict().items()}, tmp_path / "variant.pt")
    data["model"]["checkpoint"] = "variant.pt"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))

    assert main(["validate", str(tmp_path / "spec.yaml")]) == 0
    capsys.readouterr()
    assert main(["groups", str(tmp_path / "spec.yaml"), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert seen and {"mlp", "residual"} <= {g["kind"] for g in groups["groups"]}, groups  # through its own rule
    spec = validate_spec(yaml.safe_load((tmp_path / "spec.yaml").read_text()), base_dir=tmp_path)
    said = []
    document = start_search(spec, run_dir=tmp_path / "run", say=said.append)
    assert any("renamed from the variant layout" in line for line in said), said  # its converter loaded the weights
    assert document["statistics"]["full_evaluations"] == 2 and document["baseline"]["memory_bytes"] > 0
    assert document["statistics"]["dimensions"] == 2  # the spikformer space at network granularity
