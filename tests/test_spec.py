"""The constraint spec: what validates, what is refused, and how errors read."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from autocompress.errors import SpecError
from autocompress.spec import Spec, load_spec, spec_json_schema, validate_spec
from conftest import DEMO_SPEC, make_spec_data, write_spec


def errors_of(data: dict, base_dir: Path) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        validate_spec(data, base_dir=base_dir)
    return info.value.issues


def test_demo_spec_validates():
    spec = load_spec(DEMO_SPEC)
    assert isinstance(spec, Spec)
    assert spec.model.family == "spikingjelly_spikformer"
    assert spec.strategy.name == "greedy" and spec.strategy.seed == 0
    assert spec.constraints.accuracy.max_drop == 1.5
    assert spec.constraints.memory.min_saving == 0.8
    # relative paths resolve against the spec's folder, whatever the working directory
    assert spec.output.run_dir.parent == DEMO_SPEC.parent / "runs"
    assert spec.output.run_dir.name.startswith("digits-demo-")  # a new run folder per search


@pytest.mark.parametrize(
    ("dotted", "value", "path", "needle"),
    [
        ("data.batchsize", 3, "data.batchsize", "did you mean 'batch_size'"),
        ("constraints.accuracy.max_drop", -1, "constraints.accuracy.max_drop", "greater than or equal to 0"),
        ("strategy", {"name": "annealing"}, "strategy.name", "'annealing' is not a known strategy"),
        ("model.checkpoint", "missing.pt", "model.checkpoint", "checkpoint file not found"),
        ("model.family", "vit", "model.family", "'vit' is not a known model family"),
        ("model.args.embed_dims", 20, "model.args", "divisible by 8"),
        ("constraints.memory", {}, "constraints.memory", "min_saving"),
        ("constraints.memory.min_saving", 1.5, "constraints.memory.min_saving", "less than 1"),
        ("proxy.threshold", "sometimes", "proxy.threshold", "'auto' or a number"),
        ("execution.device", "tpu", "execution.device", "pattern"),
        ("space.bits", [4, 9], "space.bits[1]", "allowed"),
        ("strategy", {"name": "greedy", "beam_width": 3}, "strategy.beam_width", "unknown key"),
        ("data.dataset", "imagefolder", "data", "needs data.root"),
        ("data.root", "no/such/folder", "data.root", "data root not found"),
        ("data.image_size", 32, "", "differs from data.image_size"),
    ],
)
def test_bad_values_are_named(tmp_path, dotted, value, path, needle):
    issues = errors_of(make_spec_data(**{dotted: value}), tmp_path)
    assert any(p == path and needle in message for p, message in issues), issues


def test_every_error_is_listed_not_only_the_first(tmp_path):
    data = make_spec_data(**{"data.batchsize": 3, "constraints.accuracy.max_drop": -2})
    paths = {p for p, _ in errors_of(data, tmp_path)}
    assert {"data.batchsize", "constraints.accuracy.max_drop"} <= paths


def test_missing_required_sections(tmp_path):
    issues = errors_of({"name": "x"}, tmp_path)
    assert ("model", "required key is missing") in issues
    assert ("constraints", "required key is missing") in issues


def test_relative_checkpoint_resolves_against_spec_folder(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.pt").write_bytes(b"x")
    spec_path = write_spec(tmp_path, make_spec_data(**{"model.checkpoint": "weights/m.pt"}))
    monkeypatch.chdir("/")
    assert load_spec(spec_path).model.checkpoint == str(tmp_path / "weights" / "m.pt")


def test_reference_checkpoint_must_match_its_recipe(tmp_path):
    data = make_spec_data(**{"model.checkpoint": "reference:digits-spikformer"})
    issues = errors_of(data, tmp_path)
    assert any("trained with other arguments" in m and "embed_dims" in m for _, m in issues), issues
    unknown = errors_of(make_spec_data(**{"model.checkpoint": "reference:nope"}), tmp_path)
    assert any("unknown reference model 'nope'" in m for _, m in unknown)


def test_json_spec_and_file_errors(tmp_path):
    good = tmp_path / "spec.json"
    good.write_text(json.dumps(make_spec_data()))
    assert load_spec(good).name == "tiny"
    broken = tmp_path / "broken.json"
    broken.write_text("{\"name\": ")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(broken)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="mapping of sections"):
        load_spec(listing)


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(DEMO_SPEC.read_text() + "\nname: again\n")
    with pytest.raises(SpecError, match="duplicate key 'name'"):
        load_spec(path)


def test_demo_spec_validates_against_exported_json_schema():
    schema = spec_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    demo = yaml.safe_load(DEMO_SPEC.read_text())
    jsonschema.validate(demo, schema)
    demo["data"]["batchsize"] = 3
    with pytest.raises(jsonschema.ValidationError, match="batchsize"):
        jsonschema.validate(demo, schema)


def test_set_overrides_fields_and_names_bad_ones():
    spec = load_spec(DEMO_SPEC, overrides=["budget.max_full_evaluations=5", "space.bits=[4, 8]",
                                           "strategy.name=beam", "proxy.threshold=0.25"])
    assert spec.budget.max_full_evaluations == 5 and spec.space.bits == [4, 8]
    assert spec.strategy.name == "beam" and spec.proxy.threshold == 0.25
    with pytest.raises(SpecError, match="write KEY.PATH=VALUE"):
        load_spec(DEMO_SPEC, overrides=["budget"])
    with pytest.raises(SpecError, match="budget.max_full_evaluations"):
        load_spec(DEMO_SPEC, overrides=["budget.max_full_evaluations=-3"])
    with pytest.raises(SpecError, match="beam_widht"):
        load_spec(DEMO_SPEC, overrides=["strategy.beam_widht=3"])


def test_old_spikformer_name_builds_spikingjelly_spikformer_and_says_so(tmp_path, caplog):
    data = make_spec_data("spikformer")
    with caplog.at_level("WARNING", logger="autocompress"):
        spec = validate_spec(data, base_dir=tmp_path, source="old-spec.yaml")
    assert spec.model.family == "spikformer" and type(spec.model.args).__name__ == "SpikformerArgs"
    assert "spikingjelly_spikformer" in caplog.text and "spikformer_imagenet" in caplog.text
