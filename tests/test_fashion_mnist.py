"""Fashion-MNIST from its IDX files (a tiny fixture written here), grayscale image folders
with an explicit class order, and the refusals of damaged data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocompress.cli import main
from autocompress.data import load_data
from autocompress.data.fashion_mnist import CLASSES, read_split
from autocompress.errors import DataError, SpecError
from autocompress.evaluation import evaluate_accuracy
from autocompress.models import create_model
from autocompress.spec import validate_spec
from conftest import make_spec_data

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, train: int = 60, test: int = 30, gz: bool = True, seed: int = 0) -> Path:
    """A tiny Fashion-MNIST in the published format: class-dependent blobs, so a model can tell them apart."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 40, size=(count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 8, 4:24] += 200
        for stem, array, magic in ((STEMS[split][0], images, 2051), (STEMS[split][1], labels, 2049)):
            payload = idx_bytes(array, magic)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / stem).write_bytes(payload)
    return root


def fmnist_spec(tmp_path, root, **overrides):
    data = make_spec_data(**{
        "model.args.in_channels": 1, "model.args.image_size": 16, "data.dataset": "fashion_mnist",
        "data.root": str(root), "data.image_size": 16, "data.calibration.size": 10, "data.validation.limit": None,
        **overrides,
    })
    return validate_spec(data, base_dir=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_the_idx_files_gzipped_or_not(tmp_path, gz):
    root = write_fashion_mnist(tmp_path / f"fm-{gz}", gz=gz)
    read_split.cache_clear()
    bundle = load_data(fmnist_spec(tmp_path, root).data)
    assert len(bundle.validation) == 30 and bundle.num_classes == 10
    assert bundle.calibration.shape == (10, 1, 16, 16)
    assert bundle.validation_labels().tolist() == [i % 10 for i in range(30)]
    assert sorted(bundle.calibration_labels.tolist()) == list(range(10))  # one per class, from the training split
    assert "fashion_mnist" in bundle.description and "training split" in bundle.description
    images, labels = read_split(root, "train")
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64


def test_holdout_and_defaults_of_the_data_section(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    spec = fmnist_spec(tmp_path, root, **{"data.validation.holdout": 0.5})
    assert spec.data.image_size == 16 and spec.data.transform.preset is None
    default = validate_spec(make_spec_data(**{"model.args.in_channels": 1, "data.dataset": "fashion_mnist",
                                              "data.image_size": None, "model.args.image_size": 28}),
                            base_dir=tmp_path, check_paths=False)
    assert str(default.data.root) == "/usr/share/datasets/fashion-mnist" and default.data.image_size == 28


def damage(root: Path, how: str) -> str:
    """Break the test images file (or its labels) one way; the words its error must say."""
    images = root / "t10k-images-idx3-ubyte.gz"
    payload = gzip.decompress(images.read_bytes())
    if how == "missing":
        images.unlink()
        return "t10k-images-idx3-ubyte.gz (or t10k-images-idx3-ubyte) not found"
    if how == "magic":
        images.write_bytes(gzip.compress(struct.pack(">I", 2049) + payload[4:]))
        return "magic number 2049, expected 2051"
    if how == "truncated":
        images.write_bytes(gzip.compress(payload[:-100]))
        return "truncated"
    if how == "truncated-gzip":
        raw = images.read_bytes()
        images.write_bytes(raw[: len(raw) // 2])
        return "may be truncated or damaged"
    if how == "count":
        labels = root / "t10k-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(np.arange(29) % 10, 2049)))
        return "holds 30 images but t10k-labels-idx1-ubyte.gz 29 labels"
    if how == "label-range":
        labels = root / "t10k-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(idx_bytes(np.full(30, 12), 2049)))
        return "label 12 out of range 0-9"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "magic", "truncated", "truncated-gzip", "count", "label-range"])
def test_a_damaged_file_is_refused_by_name(tmp_path, how):
    root = write_fashion_mnist(tmp_path / "fm")
    expected = damage(root, how)
    read_split.cache_clear()
    with pytest.raises(DataError) as caught:
        load_data(fmnist_spec(tmp_path, root).data)
    message = str(caught.value)
    assert expected in message
    assert "t10k-" in message  # the file is named


def test_a_missing_data_folder_is_one_line_and_exit_2(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(make_spec_data(**{
        "model.args.in_channels": 1, "data.dataset": "fashion_mnist", "data.root": str(tmp_path / "no-such"),
        "model.args.image_size": 16})))
    assert main(["validate", str(spec_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(tmp_path / "no-such") in err and "apt-get install dataset-fashion-mnist" in err
    assert "github.com/zalandoresearch/fashion-mnist" in err


def test_the_model_must_be_grayscale_with_its_field_named(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    with pytest.raises(SpecError) as caught:
        fmnist_spec(tmp_path, root, **{"model.args.in_channels": 3})
    assert "model.args.in_channels: the fashion_mnist images have 1 channel" in str(caught.value)


def test_errors_are_said_at_once_not_in_stages(tmp_path):
    """A missing path does not hide the checks across sections: both come in one report."""
    data = make_spec_data(**{"model.args.in_channels": 3, "data.dataset": "fashion_mnist",
                             "data.root": str(tmp_path / "absent"), "model.args.image_size": 16})
    with pytest.raises(SpecError) as caught:
        validate_spec(data, base_dir=tmp_path)
    fields = [path for path, _ in caught.value.issues]
    assert "data.root" in fields and "model.args.in_channels" in fields


def export_as_folders(root: Path, images: np.ndarray, labels: np.ndarray, names=CLASSES) -> Path:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")
    return root


def test_a_grayscale_folder_in_the_given_class_order_matches_the_idx_reader(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    read_split.cache_clear()
    idx = fmnist_spec(tmp_path, root)
    images, labels = read_split(root, "test")
    folders = export_as_folders(tmp_path / "test-folders", images, labels)
    names = [name.replace("/", "-") for name in CLASSES]
    spec = validate_spec(make_spec_data(**{
        "model.args.in_channels": 1, "model.args.image_size": 16, "data.dataset": "imagefolder",
        "data.root": str(folders), "data.image_size": 16, "data.classes": names, "data.calibration.size": 10,
        "data.calibration.root": str(folders), "data.validation.limit": None,
        "data.transform": {"preset": "fashion_mnist"}}), base_dir=tmp_path)
    from_folders, from_idx = load_data(spec.data), load_data(idx.data)
    order = np.argsort([int(Path(path).stem) for path, _ in from_folders.validation.samples])
    folder_images = torch.stack([from_folders.validation[int(i)][0] for i in order])
    assert torch.equal(folder_images, from_idx.validation.images)  # bit for bit
    assert from_folders.validation_labels()[order].tolist() == labels.tolist()
    model = create_model(spec.model)
    a = evaluate_accuracy(model, from_folders, batch_size=8)
    b = evaluate_accuracy(model, from_idx, batch_size=8)
    assert a.correct == b.correct
    # sorted folder names would number "Ankle boot" 0: the order given is what keeps the labels
    sorted_spec = validate_spec(make_spec_data(**{
        "model.args.in_channels": 1, "model.args.image_size": 16, "data.dataset": "imagefolder",
        "data.root": str(folders), "data.image_size": 16, "data.calibration.size": 10,
        "data.calibration.root": str(folders), "data.validation.limit": None,
        "data.transform": {"preset": "fashion_mnist"}}), base_dir=tmp_path)
    shuffled = load_data(sorted_spec.data)
    assert shuffled.validation_labels()[order].tolist() != labels.tolist()
    assert any("sorted folder names (0 Ankle boot, 1 Bag" in note and "data.classes" in note for note in shuffled.notes)
    assert not from_folders.notes


def test_a_class_list_file_and_its_refusals(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    images, labels = read_split(root, "test")
    folders = export_as_folders(tmp_path / "folders", images, labels)
    names = [name.replace("/", "-") for name in CLASSES]
    listing = tmp_path / "classes.txt"
    listing.write_text("\n".join(names) + "\n")
    base = {"model.args.in_channels": 1, "model.args.image_size": 16, "data.dataset": "imagefolder",
            "data.root": str(folders), "data.image_size": 16, "data.calibration.size": 10,
            "data.transform": {"mean": [0.5], "std": [0.5]}}
    spec = validate_spec(make_spec_data(**base, **{"data.classes_file": str(listing)}), base_dir=tmp_path)
    assert spec.data.classes == names
    assert load_data(spec.data).calibration.shape[1] == 1
    short = names[:-1]  # "Ankle boot" is not named: its folder would be dropped without a word
    with pytest.raises(DataError, match="Ankle boot"):
        load_data(validate_spec(make_spec_data(**base, **{"data.classes": short}), base_dir=tmp_path).data)
    with pytest.raises(SpecError, match="named twice"):
        validate_spec(make_spec_data(**base, **{"data.classes": [*names, names[0]]}), base_dir=tmp_path)
    rgb_norm = {**base, "data.transform": {"preset": "timm_default"}}
    with pytest.raises(SpecError, match="data.transform: model.args.in_channels is 1, but data.transform normalises 3"):
        validate_spec(make_spec_data(**rgb_norm), base_dir=tmp_path)


REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
FMNIST_SPEC = Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist" / "joint.yaml"


def test_the_shipped_reference_is_used_as_shipped_and_checked_by_its_hash(isolated_cache, tmp_path, monkeypatch):
    from autocompress import recipes
    from autocompress.reference import available_reference, reference_metadata, shipped_path, train

    recipe = recipes.get_recipe("fmnist-spikformer")
    path = available_reference("fmnist-spikformer")
    assert path == shipped_path("fmnist-spikformer") and recipe.sha256
    assert not (isolated_cache / "references").exists()  # nothing trained, nothing cached
    meta = reference_metadata("fmnist-spikformer")
    assert meta["test_images"] == 10_000 and meta["test_correct"] == round(meta["test_accuracy"] * 100)
    assert meta["recipe"]["args"] == recipe.args
    state = torch.load(path, weights_only=True)
    spec = validate_spec(make_spec_data(**{"model.family": "spikingjelly_spikformer", "model.args": recipe.args,
                                           "data.image_size": 16}), base_dir=tmp_path)
    create_model(spec.model).net.load_state_dict(state)  # the recipe's network, every tensor
    damaged = tmp_path / "shipped"
    damaged.mkdir()
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    (damaged / path.name).write_bytes(bytes(payload))
    monkeypatch.setattr(train, "SHIPPED", damaged)
    train._verified_shipped.cache_clear()
    with pytest.raises(Exception, match="SHA-256 .* not the recipe's"):
        available_reference("fmnist-spikformer")
    train._verified_shipped.cache_clear()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Fashion-MNIST is not installed (apt-get install "
                                                   "dataset-fashion-mnist; .ci/run installs it)")
def test_the_shipped_reference_scores_its_recorded_accuracy_on_the_real_test_set(isolated_cache, cli):
    """`autocompress evaluate experiments/fashion_mnist/joint.yaml` on the 10,000 real test images, nothing trained."""
    from autocompress.reference import reference_metadata

    done = cli("evaluate", str(FMNIST_SPEC), "--json")
    assert done.returncode == 0, done.stderr
    assert "training reference model" not in done.stderr
    import json

    result = json.loads(done.stdout)["evaluation"]
    meta = reference_metadata("fmnist-spikformer")
    # the count recorded when the weights were made, within 5 of the 10,000 images: another CPU's float
    # rounding may flip an image or two at a spike threshold (exact on the machine that made them)
    assert result["total"] == 10_000 and abs(result["correct"] - meta["test_correct"]) <= 5
    assert result["correct"] >= 100 * meta["recipe"]["min_accuracy"]  # the recipe's target: 89 % top-1


@pytest.mark.parametrize("spec_file", sorted(FMNIST_SPEC.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_fashion_mnist_specs_search_the_shipped_reference_with_half_held_out(spec_file, tmp_path):
    """Each spec of experiments/fashion_mnist runs on a tiny IDX copy (the real files are not needed)."""
    from autocompress.engine import Session
    from autocompress.spec import load_spec

    spec = load_spec(spec_file, check_paths=False)
    assert spec.model.checkpoint == "reference:fmnist-spikformer" and spec.data.validation.holdout == 0.5
    assert str(spec.data.root) == "/usr/share/datasets/fashion-mnist" and spec.data.dataset == "fashion_mnist"
    root = write_fashion_mnist(tmp_path / "fm", train=80, test=40)
    read_split.cache_clear()
    small = load_spec(spec_file, overrides=[f"data.root={root}", "data.calibration.size=8"])
    session = Session.open(small, say=lambda _m: None)
    assert len(session.holdout_order()) == 20 and len(session.evaluation_order()) == 20


def test_a_class_list_file_survives_the_frozen_spec(tmp_path):
    """A run freezes its validated spec and its workers validate it again: the names read from the
    file travel with it."""
    from autocompress.spec import validate_spec as validate

    listing = tmp_path / "classes.txt"
    listing.write_text("b\na\n")
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "b").mkdir(parents=True)
    data = make_spec_data(**{"model.args.in_channels": 1, "model.args.num_classes": 2, "data.dataset": "imagefolder",
                             "data.root": str(tmp_path / "val"), "data.classes_file": str(listing),
                             "data.transform": {"mean": [0.5], "std": [0.5]}})
    spec = validate(data, base_dir=tmp_path)
    again = validate(spec.model_dump(mode="json"), base_dir=tmp_path)
    assert again.data.classes == ["b", "a"]
    listing.write_text("a\nb\n")  # changed under a frozen spec: refused, not silently renumbered
    with pytest.raises(SpecError, match="differ"):
        validate(spec.model_dump(mode="json"), base_dir=tmp_path)


def test_training_records_each_epoch_without_changing_what_it_trains():
    """``after_epoch`` (the recipe's record_epochs) may evaluate and draw random numbers: the weights
    trained are the same as without it."""
    from autocompress.reference.train import train_classifier

    def trained(record: bool):
        torch.manual_seed(0)
        model = create_model(validate_spec(make_spec_data(**{"model.args.embed_dims": 16, "model.args.num_heads": 2,
                                                             "model.args.depths": 1})).model)
        images, labels = torch.randn(24, 1, 16, 16), torch.arange(24) % 10
        seen = []

        def after(epoch: int) -> None:
            assert not model.training
            seen.append(epoch)
            torch.rand(5)  # a draw from the global generator, as an evaluation with dropout might make
        train_classifier(model, images, labels, epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0, max_shift=1,
                         flip=True, after_epoch=after if record else None)
        return seen, [t.detach().clone() for t in model.parameters()]

    seen, with_record = trained(True)
    none, without = trained(False)
    assert seen == [1, 2] and none == []
    assert all(torch.equal(a, b) for a, b in zip(with_record, without))
