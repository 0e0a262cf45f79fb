"""Data sets: the digits default, image folders (ImageNet layout) and CIFAR-10."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autocompress.data import balanced_subset, holdout_split, load_data
from autocompress.data.cifar10 import RECORD_BYTES
from autocompress.data.digits import digits_split
from autocompress.evaluation import evaluate_accuracy
from autocompress.errors import DataError, SpecError
from autocompress.models import create_model
from autocompress.spec import validate_spec
from conftest import make_spec_data


def test_digits_split_is_fixed_and_real():
    train_x, train_y, test_x, test_y = digits_split(16)
    assert train_x.shape == (1437, 1, 16, 16) and test_x.shape == (360, 1, 16, 16)
    assert set(test_y.tolist()) == set(range(10))
    again = digits_split.__wrapped__(16)
    assert torch.equal(again[2], test_x) and torch.equal(again[3], test_y)


def test_digits_calibration_comes_from_train(tmp_path):
    spec = validate_spec(make_spec_data(**{"data.calibration.size": 30, "data.validation.limit": None}), base_dir=tmp_path)
    bundle = load_data(spec.data)
    assert bundle.calibration.shape == (30, 1, 16, 16)
    assert len(bundle.validation) == 360
    train_x = digits_split(16)[0]
    # every calibration image is one of the training images
    matches = (bundle.calibration[:, None] == train_x[None]).flatten(2).all(-1).any(1)
    assert bool(matches.all())
    assert sorted(np.bincount(bundle.calibration_labels.numpy()).tolist())[0] == 3  # 30 over 10 classes


def test_balanced_subset_spreads_over_classes():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    chosen = balanced_subset(labels, 12, seed=3)
    assert len(chosen) == 12 and len(set(chosen)) == 12
    assert np.bincount(labels[chosen]).tolist() == [4, 4, 4]
    assert np.array_equal(chosen, balanced_subset(labels, 12, seed=3))
    assert np.bincount(labels[balanced_subset(labels, 30, seed=0)]).tolist() == [13, 12, 5]


def test_holdout_split_is_disjoint_seeded_and_keeps_the_class_proportions():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5 + [3] * 2 + [4])
    selection, held = holdout_split(labels, 0.4, seed=7)
    assert np.array_equal(np.sort(np.concatenate([selection, held])), np.arange(len(labels)))
    assert np.bincount(labels[held], minlength=5).tolist() == [20, 12, 2, 1, 0]  # a class of one stays selected
    assert np.all(np.diff(selection) > 0) and np.all(np.diff(held) > 0)
    again = holdout_split(labels, 0.4, seed=7)
    assert np.array_equal(selection, again[0]) and np.array_equal(held, again[1])
    assert not np.array_equal(held, holdout_split(labels, 0.4, seed=8)[1])
    assert np.bincount(labels[holdout_split(labels, 0.01, seed=0)[1]], minlength=5).tolist() == [1, 1, 1, 1, 0]


def make_image_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 6, corrupt: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40 + c, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img_{i}.png")
    for i in range(corrupt):
        (root / classes[0] / f"broken_{i}.jpg").write_bytes(b"not a jpeg at all")
    return root


def imagefolder_spec(tmp_path, root, **overrides):
    data = make_spec_data(**{
        "model.args.in_channels": 3, "model.args.image_size": 32, "model.args.num_classes": 3,
        "data.dataset": "imagefolder", "data.root": str(root), "data.image_size": 32,
        "data.calibration.size": 3, "data.validation.limit": None, "data.batch_size": 4, **overrides,
    })
    return validate_spec(data, base_dir=tmp_path)


def test_imagefolder_evaluation_skips_and_reports_unreadable_images(tmp_path, caplog):
    root = make_image_folder(tmp_path / "val")
    train = make_image_folder(tmp_path / "train", corrupt=0)
    spec = imagefolder_spec(tmp_path, root, **{"data.calibration.root": str(train)})
    bundle = load_data(spec.data)
    assert bundle.num_classes == 3
    assert bundle.calibration.shape == (3, 3, 32, 32)
    assert len(bundle.validation) == 19  # 18 images and the broken file
    torch.manual_seed(0)
    result = evaluate_accuracy(create_model(spec.model), bundle, batch_size=4)
    broken = str(root / "ant" / "broken_0.jpg")
    assert result.total == 18 and result.skipped == [broken]
    assert any(broken in record.getMessage() for record in caplog.records)


def test_loader_workers_persist_across_evaluations(tmp_path):
    """A search evaluates many candidates on the same data: the loader (and its worker
    processes) is built once per setting, and each pass reads every image again."""
    root = make_image_folder(tmp_path / "val", corrupt=0)
    bundle = load_data(imagefolder_spec(tmp_path, root).data)
    model = create_model(imagefolder_spec(tmp_path, root).model)
    first = evaluate_accuracy(model, bundle, batch_size=4, workers=1)
    loader = bundle.validation_loader(4, 1)
    assert loader.persistent_workers and loader._iterator is not None  # its worker is still up
    worker = loader._iterator
    second = evaluate_accuracy(model, bundle, batch_size=4, workers=1)
    assert bundle.validation_loader(4, 1) is loader and loader._iterator is worker
    assert (first.correct, first.total) == (second.correct, second.total) and first.total == 15
    assert bundle.validation_loader(4, 0) is not loader


def test_imagefolder_calibration_slice_is_excluded_from_validation(tmp_path):
    root = make_image_folder(tmp_path / "val", corrupt=0)
    bundle = load_data(imagefolder_spec(tmp_path, root, **{"data.calibration.size": 6}).data)
    validation = {path for path, _ in bundle.validation.samples}
    assert len(validation) == 12
    # the six calibration images are the ones missing from validation, two per class
    missing = {str(p) for p in root.rglob("*.png")} - validation
    assert len(missing) == 6 and {Path(p).parent.name for p in missing} == {"ant", "bee", "cat"}


def test_imagefolder_separate_calibration_root_and_limit(tmp_path):
    val = make_image_folder(tmp_path / "val", corrupt=0)
    train = make_image_folder(tmp_path / "train", corrupt=0)
    spec = imagefolder_spec(tmp_path, val, **{"data.calibration.root": str(train), "data.validation.limit": 9})
    bundle = load_data(spec.data)
    assert len(bundle.validation) == 9
    assert np.bincount([label for _, label in bundle.validation.samples]).tolist() == [3, 3, 3]
    assert "from" in bundle.description and str(train) in bundle.description


def test_imagefolder_without_class_folders_is_a_clear_error(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(flat / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(imagefolder_spec(tmp_path, flat).data)


def write_cifar_binary(folder: Path, n_test: int = 40, n_train: int = 60) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, n in [("test_batch", n_test), ("data_batch_1", n_train)]:
        records = rng.integers(0, 256, size=(n, RECORD_BYTES), dtype=np.uint8)
        records[:, 0] = np.arange(n) % 10
        records.tofile(folder / f"{name}.bin")


def cifar_spec(tmp_path, root, **overrides):
    data = make_spec_data(**{
        "model.args.in_channels": 3, "model.args.image_size": 32, "data.dataset": "cifar10",
        "data.root": str(root), "data.image_size": 32, "data.validation.limit": None,
        "data.calibration.size": 20, **overrides,
    })
    return validate_spec(data, base_dir=tmp_path)


def test_cifar10_binary_release(tmp_path):
    write_cifar_binary(tmp_path / "cifar" / "cifar-10-batches-bin")
    spec = cifar_spec(tmp_path, tmp_path / "cifar")
    bundle = load_data(spec.data)
    assert len(bundle.validation) == 40 and bundle.calibration.shape == (20, 3, 32, 32)
    assert np.bincount(bundle.calibration_labels.numpy()).tolist() == [2] * 10
    result = evaluate_accuracy(create_model(spec.model), bundle, batch_size=16)
    assert result.total == 40


def test_cifar10_absent_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR-10 under .*cifar-10-batches-bin.*Nothing is downloaded"):
        load_data(cifar_spec(tmp_path, tmp_path / "empty").data)


def test_cifar10_python_release_is_only_unpickled_when_official(tmp_path, capsys):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(DataError, match="not the official CIFAR-10 Python release"):
        load_data(cifar_spec(tmp_path, tmp_path / "cifar").data)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(("preset", "crop", "resample"), [("timm_default", 0.875, Image.BILINEAR),
                                                          ("spikformer_imagenet", 1.0, Image.BICUBIC),
                                                          ("sdt_imagenet", 0.95, Image.BICUBIC)])
def test_transform_presets_compute_what_timm_computes(preset, crop, resample):
    """timm's eval transform: Resize(floor(size / crop_pct)) on the shorter side, the longer one
    truncated (torchvision's rule), CenterCrop(size), ToTensor, Normalize."""
    from autocompress.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS, evaluation_transform, resolve_transform
    from autocompress.spec import TransformSpec

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(301, 437, 3), dtype=np.uint8))  # H 301, W 437
    size = 64
    scale = int(size / crop)
    resized = image.resize((int(437 * scale / 301), scale), resample)
    left, top = round((resized.width - size) / 2), round((resized.height - size) / 2)
    expected = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(expected).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    transform = resolve_transform(TransformSpec(preset=preset), "imagefolder")
    assert transform == PRESETS[preset]
    assert torch.allclose(evaluation_transform(image, size, transform), expected, atol=1e-6)
    overridden = resolve_transform(TransformSpec(preset=preset, crop_fraction=0.5, interpolation="bilinear"),
                                   "imagefolder")
    assert (overridden.crop_fraction, overridden.interpolation, overridden.mean) == (0.5, "bilinear", IMAGENET_MEAN)


def test_transform_is_refused_for_digits_and_checked_for_rgb(tmp_path):
    with pytest.raises(SpecError, match="remove data.transform"):
        validate_spec(make_spec_data(**{"data.transform": {"preset": "cifar10"}}), base_dir=tmp_path)
    data = make_spec_data(**{"data.dataset": "imagefolder", "data.root": str(tmp_path),
                             "data.transform": {"mean": [0.5, 0.5]}})
    with pytest.raises(SpecError, match="transform.mean has 2 values"):
        validate_spec(data, base_dir=tmp_path)


def test_a_subset_of_imagenet_folders_keeps_imagenet_label_numbers(tmp_path):
    from autocompress.data.imagefolder import imagenet_wnids

    wnids = imagenet_wnids()
    picked = (wnids[1], wnids[500], wnids[999])
    root = make_image_folder(tmp_path / "val", classes=picked, per_class=3, corrupt=0)
    spec = imagefolder_spec(tmp_path, root)
    bundle = load_data(spec.data, model_classes=1000)  # a 1,000-way model: ImageNet's numbering
    assert bundle.num_classes == 1000 and "3 of ImageNet-1k's 1,000 classes" in bundle.description
    assert {label for _, label in bundle.validation.samples} == {1, 500, 999}
    assert load_data(spec.data, model_classes=3).num_classes == 3  # a 3-way model: the folders' numbering
    folders = imagefolder_spec(tmp_path, root, **{"data.class_index": "folders"})
    assert {label for _, label in load_data(folders.data, model_classes=1000).validation.samples} == {0, 1, 2}
    forced = imagefolder_spec(tmp_path, make_image_folder(tmp_path / "other", corrupt=0),
                              **{"data.class_index": "imagenet"})
    with pytest.raises(DataError, match="not ImageNet-1k synset ids: ant, bee, cat"):
        load_data(forced.data)


def make_jpeg_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 5) -> Path:
    """JPEGs (q90, of differing sizes), one CMYK and one grayscale among them, one broken file."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            y, x = np.mgrid[0:50 + 3 * i, 0:64 + 5 * c]
            pixels = np.stack([x * 3, y * 4, (x + y) * 2], -1) + rng.integers(0, 60, (*x.shape, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.jpg", quality=90)
    Image.open(root / "bee" / "0.jpg").convert("CMYK").save(root / "bee" / "cmyk.jpg", quality=90)
    Image.open(root / "cat" / "0.jpg").convert("L").save(root / "cat" / "gray.jpg", quality=90)
    (root / "ant" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_decoded_cache_gives_the_numbers_of_the_decoding_path_and_follows_the_files(tmp_path, monkeypatch):
    from autocompress.data.decoded import DecodedImages

    root = make_jpeg_folder(tmp_path / "val")
    spec = imagefolder_spec(tmp_path, root)
    model = create_model(spec.model)
    plain = load_data(spec.data)
    cached = load_data(spec.data)
    assert cached.use_decoded_cache(tmp_path / "cache")
    order = np.random.default_rng(0).permutation(len(plain.validation))
    for indices in (None, order):
        a = evaluate_accuracy(model, plain, batch_size=4, indices=indices)
        b = evaluate_accuracy(model, cached, batch_size=4, indices=indices)
        assert (a.correct, a.total, a.skipped) == (b.correct, b.total, b.skipped) and a.total == 14  # 3 calibration
        assert np.array_equal(a.per_image, b.per_image)
    # the same images, bit for bit, as the decoding path's batches
    loader_images = torch.cat([batch[0] for batch in plain.validation_batches(5, 0, torch.device("cpu"))])
    cache_images = torch.cat([batch[0] for batch in cached.validation_batches(5, 0, torch.device("cpu"))])
    assert torch.equal(loader_images, cache_images)
    (folder,) = (tmp_path / "cache" / "decoded").glob("*/")
    assert isinstance(cached.decoded, DecodedImages) and (folder / "images.u8").stat().st_size == 15 * 3 * 32 * 32
    # a second bundle on the node reads the cache (no new one); a changed file makes a new one
    again = load_data(spec.data)
    assert again.use_decoded_cache(tmp_path / "cache") and len(list((tmp_path / "cache" / "decoded").glob("*/"))) == 1
    Image.new("RGB", (70, 60), (200, 10, 10)).save(plain.validation.samples[0][0], quality=90)
    changed = load_data(spec.data)
    assert changed.use_decoded_cache(tmp_path / "cache") and len(list((tmp_path / "cache" / "decoded").glob("*/"))) == 2
    # no room on the disk: said, and the evaluation decodes as before
    monkeypatch.setattr("autocompress.data.decoded._free_bytes", lambda _folder: 10)
    said: list[str] = []
    Image.new("RGB", (70, 60), (10, 200, 10)).save(plain.validation.samples[1][0], quality=90)
    small = load_data(spec.data)
    assert not small.use_decoded_cache(tmp_path / "cache", say=said.append) and small.decoded is None
    assert "need" in said[0] and "GiB free; validating from the image files instead" in said[0]
    assert evaluate_accuracy(model, small, batch_size=4).total == 14
