"""Compression operators: channel groups, pruning == masking, VBP, quantization, export."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from autocompress.compress import (
    baseline_footprint,
    compress_model,
    export_compressed,
    find_channel_groups,
    footprint,
    header_bound,
    load_compressed,
    quantizable_layers,
)
from autocompress.compress.pruning import activity_statistics, consumer_importance, select_removed
from autocompress.compress.quantization import dequantize_tensor, pack, quantize_tensor, unpack
from autocompress.compress.verification import compare_prune_and_mask, verify_group
from autocompress.vocabulary import QUANTIZED_BITS
from autocompress.data.digits import digits_split
from autocompress.errors import CheckpointError
from autocompress.models import create_model
from autocompress.proxy import membrane_drift, record_potentials
from autocompress.spec import validate_spec
from conftest import NO_COMPENSATION, PLAIN, TINY_ARGS, make_spec_data, tiny_trained_model

FAMILIES = sorted(TINY_ARGS)
IMAGES = digits_split(16)[2][:12]  # a fixed input: real digits


def build(family: str, tmp_path, **overrides):
    torch.manual_seed(0)
    return create_model(validate_spec(make_spec_data(family, **{"model.args.depths": 2, **overrides}), base_dir=tmp_path).model)


@pytest.fixture(scope="session")
def trained():
    """Tiny SViTs of every family trained briefly on digits, so that neurons fire as in use."""
    return {family: tiny_trained_model(family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_found_from_the_model(family, tmp_path):
    model = build(family, tmp_path)
    kinds = [g.kind for g in find_channel_groups(model).groups]
    attention = ["attention_qk", "attention_v"] if family.startswith("spikformer") else ["attention_qkv"]
    assert kinds.count("mlp") == 2 and kinds.count("stem") == 3 and kinds.count("residual") == 1
    assert all(kinds.count(k) == 2 for k in attention)
    deeper = build(family, tmp_path, **{"model.args.depths": 3, "model.args.embed_dims": 24})
    groups = find_channel_groups(deeper).by_name()
    assert groups["blocks.2.mlp.hidden"].channels == 48 and groups["residual"].channels == 24


def _group_cases():
    return [(family, name) for family in FAMILIES for name in
            [g.name for g in find_channel_groups(build(family, "/tmp")).groups]]


@pytest.mark.parametrize(("family", "group_name"), _group_cases())
def test_pruning_a_group_equals_zeroing_it(trained, family, group_name):
    model = trained[family]
    group = find_channel_groups(model).by_name()[group_name]
    assert verify_group(model, group, IMAGES) is None
    # and with the channels L2 ranking picks, at a quarter of the channels
    from autocompress.compress.pruning import l2_importance

    removed = select_removed(group, 0.25, l2_importance(model.net, group))
    if removed:
        assert compare_prune_and_mask(model, group, removed, IMAGES) is None


def test_a_miscoupled_group_fails_verification(trained):
    model = trained["spikformer"]
    group = find_channel_groups(model).by_name()["blocks.0.mlp.hidden"]
    wrong = dataclasses.replace(group, members=tuple(m for m in group.members if m.role != "in"))
    assert verify_group(model, wrong, IMAGES).startswith("the pruned model does not run")
    shifted = dataclasses.replace(group, members=tuple(dataclasses.replace(m, offset=1) if m.role == "in" else m
                                                        for m in group.members))
    assert verify_group(model, shifted, IMAGES) is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_is_physically_smaller(trained, family):
    model = trained[family]
    groups = find_channel_groups(model)
    pruned = compress_model(model, **PLAIN, prune={g.name: 0.5 for g in groups.groups}, groups=groups)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after < 0.6 * before
    assert pruned(IMAGES).shape == (12, 10)
    for name, group in groups.by_name().items():
        assert pruned.compression.kept_per_head[name] == group.keep_count(0.5)


@pytest.mark.parametrize("family", FAMILIES)
def test_rate_zero_and_32_bits_are_bit_identical(trained, family):
    model = trained[family]
    groups = find_channel_groups(model)
    same = compress_model(model, **PLAIN, prune={g.name: 0.0 for g in groups.groups},
                          bits={layer: 32 for layer in quantizable_layers(model.net)}, groups=groups)
    with torch.inference_mode():
        assert torch.equal(same(IMAGES), model(IMAGES))
    assert footprint(same) == footprint(model) == baseline_footprint(model)


@pytest.mark.parametrize(("family", "kind"), [("spikformer", "mlp"), ("spike_driven_transformer", "mlp")])
def test_vbp_compensation_brings_outputs_closer(trained, family, kind):
    model = trained[family]
    train_x, _, test_x, _ = digits_split(16)
    calibration = train_x[:64]
    groups = find_channel_groups(model)
    mlp = {g.name: 0.5 for g in groups.groups if g.kind == kind}
    assert mlp
    with torch.inference_mode():
        reference = model(test_x)
        errors = {}
        for compensate in (True, False):
            pruned = compress_model(model, **NO_COMPENSATION, prune=mlp, importance="variance", compensate=compensate,
                                    calibration=calibration, groups=groups)
            errors[compensate] = float((pruned(test_x) - reference).norm())
    assert errors[True] < errors[False]
    assert pruned.compression.importance == "variance"


def test_vbp_adds_a_bias_where_the_next_layer_has_none(trained):
    model = trained["spikformer"]  # Spikformer's fc2 has no bias
    calibration = digits_split(16)[0][:64]
    pruned = compress_model(model, **NO_COMPENSATION, prune={"blocks.0.mlp.hidden": 0.5}, importance="variance", calibration=calibration)
    assert pruned.compression.biased == ["blocks.0.mlp.fc2.0"]
    assert pruned.net.get_submodule("blocks.0.mlp.fc2.0").bias is not None


def test_activation_importance_weighs_the_variance_by_the_weights_the_channel_feeds(trained):
    model = trained["spikformer"]
    calibration = digits_split(16)[0][:64]
    groups = find_channel_groups(model)
    group = groups.by_name()["blocks.0.mlp.hidden"]
    variance = activity_statistics(model, [group], calibration)[group.name][1]
    score = consumer_importance(model.net, group, variance)
    consumer = next(m for m in group.members if m.role == "in" and m.module == group.compensate)
    weight = model.net.get_submodule(consumer.module).weight.detach().double()
    column = weight[:, consumer.position(3)].flatten()
    assert score[3] == pytest.approx(float(variance[3]) * float(column.pow(2).sum()))
    lively = int(torch.argsort(score)[-1])
    removed = set(compress_model(model, **NO_COMPENSATION, prune={group.name: 0.5}, importance="activation", calibration=calibration,
                                 groups=groups).pruned_channels[group.name])
    assert lively not in removed and len(removed) == group.channels // 2
    # a channel both scores remove is kept by this one once the weights it feeds grow a thousandfold
    by_variance = set(compress_model(model, **NO_COMPENSATION, prune={group.name: 0.5}, importance="variance", calibration=calibration,
                                     groups=groups).pruned_channels[group.name])
    quiet = min(c for c in removed & by_variance if variance[c] > 0)
    heavier = copy.deepcopy(model)
    with torch.no_grad():
        heavier.net.get_submodule(consumer.module).weight[:, consumer.position(quiet)] *= 1000
    for importance, removes in (("activation", False), ("variance", True)):
        now = compress_model(heavier, **NO_COMPENSATION, prune={group.name: 0.5}, importance=importance, calibration=calibration,
                             groups=groups).pruned_channels[group.name]
        assert (quiet in now) == removes
    assert compress_model(model, **NO_COMPENSATION, bits={"head": 4}, importance="activation").compression.bits == {"head": 4}  # no pruning
    with pytest.raises(ValueError, match="activation-based pruning needs the calibration batch"):
        compress_model(model, **NO_COMPENSATION, prune={group.name: 0.5}, importance="activation")


def test_bias_correction_restores_each_quantized_layers_mean_output_and_exports(trained, tmp_path):
    model = trained["spikformer"]
    calibration = digits_split(16)[0][:64]
    inputs = {}
    for layer in ("head", "blocks.0.mlp.fc2.0"):  # the head has a bias, fc2 has none
        module = model.net.get_submodule(layer)
        handle = module.register_forward_hook(lambda _m, i, _o: inputs.__setitem__("x", i[0].detach()))
        with torch.inference_mode():
            model(calibration)
        handle.remove()
        x = inputs["x"]  # what the layer sees: only this layer is quantized, so it sees the same in every copy
        means = {}
        for correct in (None, calibration):
            compressed = compress_model(model, **PLAIN, bits={layer: 2}, correct=correct)
            with torch.inference_mode():
                means[correct is not None] = compressed.net.get_submodule(layer)(x).double().flatten(0, -2).mean(0) \
                    if layer == "head" else compressed.net.get_submodule(layer)(x).double().movedim(1, -1).flatten(0, -2).mean(0)
        with torch.inference_mode():
            out = module(x).double()
        reference = out.flatten(0, -2).mean(0) if layer == "head" else out.movedim(1, -1).flatten(0, -2).mean(0)
        assert torch.allclose(means[True], reference, atol=1e-5)
        assert (means[False] - reference).abs().max() > 100 * (means[True] - reference).abs().max()
    assert compressed.compression.biased == ["blocks.0.mlp.fc2.0"]
    path = tmp_path / "corrected.safetensors"
    export_compressed(compressed, path)
    with torch.inference_mode():
        assert torch.equal(load_compressed(path)(IMAGES), compressed(IMAGES))


@pytest.mark.parametrize("bits", QUANTIZED_BITS)
def test_pack_unpack_round_trip(bits):
    weight = torch.randn(7, 5, 3)
    q, scale = quantize_tensor(weight, bits)
    qmax = 2 ** (bits - 1) - 1
    assert int(q.abs().max()) == qmax and scale.shape == (7,)
    packed = pack(q, bits)
    assert packed.numel() == -(-q.numel() * bits // 8)
    assert torch.equal(unpack(packed, bits, tuple(q.shape)), q)
    error = float((dequantize_tensor(q, scale) - weight).abs().max())
    assert error <= float(scale.max()) / 2 + 1e-6


def test_quantization_error_shrinks_with_bits():
    weight = torch.randn(16, 64)
    errors = [float((dequantize_tensor(*quantize_tensor(weight, b)) - weight).norm()) for b in (2, 3, 4, 8, 16)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


MIXED = [
    {"prune": 0.25, "bits": (8,)},
    {"prune": 0.5, "bits": (2, 3, 4, 8)},
    {"prune": 0.75, "bits": (4, 2)},
    {"prune": 0.0, "bits": (3, 32)},
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", MIXED, ids=["p25-8b", "p50-2348b", "p75-42b", "p0-3b32"])
def test_export_then_load_is_exact_and_sized_by_the_footprint(trained, family, config, tmp_path):
    model = trained[family]
    groups = find_channel_groups(model)
    layers = sorted(quantizable_layers(model.net))
    bits = {layer: config["bits"][i % len(config["bits"])] for i, layer in enumerate(layers)}
    compressed = compress_model(model, **PLAIN, prune={g.name: config["prune"] for g in groups.groups}, bits=bits, groups=groups)
    path = tmp_path / "model.safetensors"
    size = export_compressed(compressed, path)
    loaded = load_compressed(path)
    with torch.inference_mode():
        assert torch.equal(loaded(IMAGES), compressed(IMAGES))
    expected = footprint(compressed)
    assert footprint(loaded) == expected
    assert 0 < size - expected <= header_bound(expected)
    assert expected < baseline_footprint(model)


def test_load_refuses_files_that_are_not_exports(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_compressed(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an autocompress export"):
        load_compressed(other)
    with pytest.raises(CheckpointError, match="file not found"):
        load_compressed(tmp_path / "absent.safetensors")


def test_custom_qkformer_gets_verified_groups_and_exports(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    data = make_spec_data()
    data["model"] = {"family": "custom", "factory": "custom_models:tiny_qkformer"}
    torch.manual_seed(0)
    model = create_model(validate_spec(data, base_dir=tmp_path).model)
    report = find_channel_groups(model, example=IMAGES)
    names = [g.name for g in report.groups]
    assert {"stage1.0.mlp.fc1.out", "stage2.0.mlp.fc1.out", "stage3.0.mlp.fc1.out"} <= set(names)
    rejected = dict(report.rejected)
    assert "head.out" in rejected and any(".attn." in name for name in rejected)
    assert all(reason for reason in rejected.values())
    for group in report.groups:  # every offered group passed prune == mask
        assert verify_group(model, group, IMAGES) is None
    bits = {layer: 4 for layer in quantizable_layers(model.net)}
    compressed = compress_model(model, **PLAIN, prune={name: 0.5 for name in names}, bits=bits, groups=report)
    path = tmp_path / "qkformer.safetensors"
    export_compressed(compressed, path)
    with torch.inference_mode():
        assert torch.equal(load_compressed(path)(IMAGES), compressed(IMAGES))
    # traced groups learn which neuron layers carry them, so the drift proxy can compare
    # pruned layers on their kept channels (without that, every pruned candidate failed)
    assert all(group.carriers for group in report.groups if ".mlp.fc1" in group.name)
    reference = record_potentials(model, IMAGES)
    by_name = report.by_name()
    for name in names:
        one = compress_model(model, **PLAIN, prune={name: 0.5}, groups=report)
        assert 0.0 <= membrane_drift(reference, one, IMAGES, by_name, one.pruned_channels) <= 1.0
    assert membrane_drift(reference, compressed, IMAGES, by_name, compressed.pruned_channels) > 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_group_sizes_match_what_pruning_removes(trained, family):
    model = trained[family]
    total = sum(p.numel() for p in model.parameters())
    groups = find_channel_groups(model)
    for group in groups.groups:
        pruned = compress_model(model, **PLAIN, prune={group.name: 0.5}, groups=groups)
        removed = total - sum(p.numel() for p in pruned.parameters())
        share = (group.channels - group.keep_count(0.5) * group.heads) / group.channels
        if group.kind == "residual":  # a layer on both sides of the stream loses rows and columns
            assert 0 < removed < group.params <= total
        else:
            assert removed == group.params * share, group.name


def test_activity_statistics_follow_the_channels(trained):
    """The spike-rate statistics of channel c are those of the tensor channel that
    feeds the next layer's input c, also where the neuron output is split into heads."""
    from autocompress.compress.pruning import activity_statistics

    model = trained["spikformer"]
    images = digits_split(16)[0][:32]
    groups = find_channel_groups(model).by_name()
    inputs = {}
    for name, consumer in (("blocks.0.attn.v", "blocks.0.attn.proj_conv_bn"), ("blocks.0.mlp.hidden", "blocks.0.mlp.fc2")):
        module = model.net.get_submodule(consumer)
        module.register_forward_pre_hook(lambda _m, args, name=name: inputs.setdefault(name, []).append(args[0].detach()))
    stats = activity_statistics(model, [groups["blocks.0.attn.v"], groups["blocks.0.mlp.hidden"]], images, batch=12)
    for name, chunks in inputs.items():
        seen = torch.cat(chunks, dim=1)  # [T, N, C, L], the consumer's input, over the chunks of images
        assert seen.shape[1] == len(images)
        samples = seen.double().mean(0).transpose(0, 1).reshape(seen.shape[2], -1)
        mean = samples.mean(1)
        assert torch.allclose(stats[name][0], mean), name
        assert torch.allclose(stats[name][1], samples.var(1, unbiased=False), atol=1e-12), name
        assert float(mean.max()) > 0  # the channels are active, so the check has teeth


@pytest.mark.parametrize("family", FAMILIES)
def test_membrane_quantization_is_optional_and_exported(trained, family, tmp_path):
    model = trained[family]
    with torch.inference_mode():
        reference = model(IMAGES)
        assert torch.equal(compress_model(model, **PLAIN, neuron_bits=32)(IMAGES), reference)  # off: untouched
        fine = compress_model(model, **PLAIN, neuron_bits=16)
        coarse = compress_model(model, **PLAIN, neuron_bits=4)
        fine_error = float((fine(IMAGES) - reference).abs().max())
        coarse_error = float((coarse(IMAGES) - reference).abs().max())
    assert fine_error < coarse_error and coarse_error > 0
    path = tmp_path / "m.safetensors"
    export_compressed(coarse, path)
    loaded = load_compressed(path)
    assert loaded.compression.neuron_bits == 4
    with torch.inference_mode():
        assert torch.equal(loaded(IMAGES), coarse(IMAGES))


def test_membrane_grid_holds_threshold_and_reset():
    from autocompress.compress.neurons import quantize_membrane

    v = torch.tensor([-5.0, -0.01, 0.0, 0.49, 1.0, 1.02, 3.0])
    q = quantize_membrane(v, threshold=1.0, bits=4)  # step 0.25, range [-2, 1.75]
    assert q.tolist() == [-2.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.75]


def test_exported_files_get_a_normal_mode(trained, tmp_path):
    import os

    path = tmp_path / "m.safetensors"
    export_compressed(trained["spikformer"], path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


@pytest.mark.parametrize("family", FAMILIES)
def test_every_batchnorm_folds_exactly_and_the_export_keeps_it(trained, family, tmp_path):
    """Each family's BatchNorms are found after their layers, folded without changing the
    output, and a compressed model with folds, MSE clipping and recalibrated statistics
    exports and loads to the same outputs, with no BatchNorm left in either."""
    from autocompress.compress import fold_batchnorms, foldable_batchnorms

    model = trained[family]
    norms = [p for p, m in model.net.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    folds = foldable_batchnorms(model, IMAGES)
    assert sorted(n for _, n in folds) == sorted(norms) and norms
    folded = copy.deepcopy(model)
    fold_batchnorms(folded.net, folds)
    with torch.inference_mode():
        assert torch.allclose(folded(IMAGES), model(IMAGES), atol=1e-4)
    assert footprint(folded) < footprint(model)

    groups = find_channel_groups(model)
    layers = sorted(quantizable_layers(model.net))
    compressed = compress_model(model, importance="l2", prune={g.name: 0.25 for g in groups.groups},
                                bits={l: 3 for l in layers}, groups=groups, fold=folds, clip=True, recalibrate=IMAGES)
    assert set(compressed.compression.folded) == set(norms)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in compressed.net.modules())
    path = tmp_path / "model.safetensors"
    export_compressed(compressed, path)
    loaded = load_compressed(path)
    with torch.inference_mode():
        assert torch.equal(loaded(IMAGES), compressed(IMAGES))
    assert footprint(loaded) == footprint(compressed)


def test_mse_clipping_lowers_the_rounding_error_and_survives_requantization():
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    weight[:, 0] *= 8  # an outlier per row
    for bits in (2, 3, 4):
        plain = dequantize_tensor(*quantize_tensor(weight, bits))
        q, scale = quantize_tensor(weight, bits, clip=True)
        clipped = dequantize_tensor(q, scale)
        assert ((clipped - weight) ** 2).sum() < ((plain - weight) ** 2).sum()
        again_q, again_scale = quantize_tensor(clipped, bits)  # what export stores
        assert torch.equal(again_q, q) and torch.allclose(again_scale, scale)


def test_batchnorm_recalibration_is_deterministic_and_follows_the_compressed_model(trained):
    model = trained["spikformer"]
    groups = find_channel_groups(model)
    layers = sorted(quantizable_layers(model.net))
    config = dict(prune={g.name: 0.25 for g in groups.groups}, bits={l: 2 for l in layers}, groups=groups)
    plain = compress_model(model, **PLAIN, **config)
    first = compress_model(model, **{**config, **PLAIN, "recalibrate": IMAGES})
    second = compress_model(model, **{**config, **PLAIN, "recalibrate": IMAGES})
    means = lambda m: [b.running_mean.clone() for b in m.net.modules()  # noqa: E731
                       if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(torch.equal(a, b) for a, b in zip(means(first), means(second)))
    assert any(not torch.allclose(a, b) for a, b in zip(means(first), means(plain)))
    with torch.inference_mode():
        assert torch.equal(first(IMAGES), second(IMAGES))


def test_compress_model_defaults_are_the_specs(trained):
    """Called with a calibration batch and nothing else, compress_model builds what the search
    builds with the spec's compression defaults: variance importance, MSE clipping, BatchNorm
    recalibration on the batch and folding of the BatchNorms found foldable on it."""
    from autocompress.compress import foldable_batchnorms
    from autocompress.spec.sections import CompressionSpec

    model = trained["spikformer"]
    groups = find_channel_groups(model)
    config = dict(prune={g.name: 0.25 for g in groups.groups}, bits={l: 4 for l in quantizable_layers(model.net)},
                  groups=groups, calibration=IMAGES)
    defaults = CompressionSpec()
    assert (defaults.importance, defaults.mse_clipping, defaults.fold_batchnorm, defaults.recalibrate_batchnorm) == \
        ("variance", True, True, True)
    default = compress_model(model, **config)
    spelled = compress_model(model, **config, importance="variance", clip=True,
                             fold=foldable_batchnorms(model, IMAGES), recalibrate=IMAGES)
    assert default.compression.importance == "variance" and default.compression.folded
    assert default.compression.folded == spelled.compression.folded
    assert torch.equal(default(IMAGES), spelled(IMAGES))
    plain = compress_model(model, **config, **PLAIN)
    assert not plain.compression.folded and not torch.equal(default(IMAGES), plain(IMAGES))

