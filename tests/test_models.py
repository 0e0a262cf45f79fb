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
    """The families the spec accepts are the ones the registry builds: the built-in ones of
    the vocabulary (each with a default search space file), their aliases, and custom."""
    from typing import get_args

    from autocompress.engine.space_file import default_space_file
    from autocompress.spec import ModelSpec
    from autocompress.vocabulary import CUSTOM_FAMILY, FAMILY_ALIASES, FAMILY_SPACES

    union = get_args(get_args(ModelSpec)[0])
    in_spec = {tag for member in union for tag in get_args(member.model_fields["family"].annotation)}
    assert in_spec == set(family_names()) == set(FAMILY_SPACES) | set(FAMILY_ALIASES) | {CUSTOM_FAMILY}
    for family in set(FAMILY_SPACES) | set(FAMILY_ALIASES):
        assert default_space_file(family).is_file()
