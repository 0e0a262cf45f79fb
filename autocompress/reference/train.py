"""Train, cache and look up the reference models of :mod:`autocompress.recipes`.

A recipe with a ``sha256`` ships its trained weights in the package
(``autocompress/reference/shipped/NAME.pt`` and ``NAME.json``): they are used as they
are once their hash matches the recipe's, and nothing is trained. Other reference
models are trained once per machine and cached under ``$AUTOCOMPRESS_CACHE/references``
(default ``~/.cache/autocompress``): the state dict ``NAME.pt`` and ``NAME.json`` with
the recipe, the accuracy reached and the training time; ``train-reference NAME`` trains
any of them again from its recipe into the cache. Files are written atomically, so an
interrupted training leaves no half-written checkpoint behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from autocompress.console import log_info
from autocompress.data.training import shift_and_flip
from autocompress.console import progress_bar
from autocompress.atomic import atomic_write, atomic_write_json
from autocompress.data import DataBundle, TensorImageDataset, digits_split
from autocompress.errors import CheckpointError
from autocompress.evaluation import evaluate_accuracy
from autocompress.models import create_model
from autocompress.recipes import ReferenceRecipe, get_recipe
from autocompress.cachedir import cache_dir
from autocompress.spec import ModelSpec
from autocompress.vocabulary import DATASETS

SHIPPED = Path(__file__).resolve().parent / "shipped"


def reference_path(name: str) -> Path:
    """Where ``train-reference`` caches reference ``name`` on this machine."""
    return cache_dir() / "references" / f"{name}.pt"


def shipped_path(name: str) -> Path:
    return SHIPPED / f"{name}.pt"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _verified_shipped(name: str, sha256: str) -> Path:
    path = shipped_path(name)
    found = file_sha256(path)
    if found != sha256:
        raise CheckpointError(f"the shipped weights of reference model '{name}' ({path}) have SHA-256 {found}, not "
                              f"the recipe's {sha256}: the installation is damaged; reinstall autocompress, or "
                              f"train them again with `autocompress train-reference {name} --force`")
    return path


def available_reference(name: str) -> Path | None:
    """The weights of reference ``name`` already here: shipped (hash checked), else cached; None if neither."""
    recipe = get_recipe(name)
    if recipe.sha256 and shipped_path(name).is_file():
        return _verified_shipped(name, recipe.sha256)
    path = reference_path(name)
    return path if path.is_file() and _read_json(path.with_suffix(".json")) is not None else None


def _training_data(recipe: ReferenceRecipe, data_root: Path | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor, DataBundle]:
    if recipe.dataset == "digits":
        train_x, train_y, test_x, test_y = digits_split(recipe.image_size)
    elif recipe.dataset == "fashion_mnist":
        from autocompress.data.fashion_mnist import read_split, to_tensor

        root = Path(data_root or DATASETS["fashion_mnist"].default_root)
        (train_images, train_labels), (test_images, test_labels) = read_split(root, "train"), read_split(root, "test")
        train_x, test_x = to_tensor(train_images, recipe.image_size), to_tensor(test_images, recipe.image_size)
        train_y, test_y = torch.from_numpy(train_labels), torch.from_numpy(test_labels)
    else:
        raise NotImplementedError(f"reference training on {recipe.dataset}")
    test = DataBundle(TensorImageDataset(test_x, test_y), test_x[:0], test_y[:0], DATASETS[recipe.dataset].classes,
                      f"{recipe.dataset} test split")
    return train_x, train_y, test


def train_classifier(
    model, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
    weight_decay: float, max_shift: int = 0, flip: bool = False, seed: int = 0, progress: bool = False,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """Train an SViT in place: AdamW with a one-cycle schedule, cross-entropy on the
    logits averaged over time steps, optional random-shift (and flip) augmentation.
    ``after_epoch(epoch)`` is called after each epoch (1-based), the model in eval mode,
    inside ``torch.random.fork_rng``: what it draws does not change the training."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(labels) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    bar = progress_bar("epoch {task.fields[epoch]}/{task.fields[epochs]}", "loss {task.fields[loss]:.3f}",
                       enabled=progress, remaining=True)
    with bar:
        task = bar.add_task("train", total=epochs * steps_per_epoch, loss=float("nan"), epoch=1, epochs=epochs)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(labels), generator=generator)
            total_loss = 0.0
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                loss = F.cross_entropy(model(shift_and_flip(images[index], max_shift, generator, flip)), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(index)
                bar.update(task, advance=1, loss=total_loss / ((step + 1) * batch_size), epoch=epoch + 1)
            if after_epoch is not None:
                model.eval()
                with torch.random.fork_rng(devices=[]):
                    after_epoch(epoch + 1)
    model.eval()


def train_reference(name: str, *, progress: bool = False, say: Callable[[str], None] = log_info,
                    data_root: Path | None = None) -> dict:
    """Train reference model ``name`` from its recipe (CPU), cache it, return its metadata.
    ``data_root``: where its data set's files are (default: the data set's default root)."""
    recipe = get_recipe(name)
    torch.manual_seed(recipe.seed)
    model_spec = TypeAdapter(ModelSpec).validate_python({"family": recipe.family, "args": recipe.args})
    model = create_model(model_spec)
    train_x, train_y, test = _training_data(recipe, data_root)
    say(f"training reference model '{name}': {recipe.description}; {recipe.epochs} epochs on {len(train_y)} images")
    by_epoch: list[float] = []
    evaluating = 0.0

    def test_after(epoch: int) -> None:  # recorded, never used to choose: the recipe fixes the epochs
        nonlocal evaluating
        began = time.perf_counter()
        by_epoch.append(evaluate_accuracy(model, test, batch_size=256).accuracy)
        evaluating += time.perf_counter() - began
        say(f"epoch {epoch}/{recipe.epochs}: test top-1 {by_epoch[-1]:.2f} %")

    start = time.perf_counter()
    train_classifier(
        model, train_x, train_y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        weight_decay=recipe.weight_decay, max_shift=recipe.max_shift, flip=recipe.flip, seed=recipe.seed,
        progress=progress, after_epoch=test_after if recipe.record_epochs else None,
    )
    seconds = time.perf_counter() - start - evaluating
    result = evaluate_accuracy(model, test, batch_size=256)
    metadata = {
        "name": name,
        "test_accuracy": result.accuracy,
        "test_correct": result.correct,
        "test_images": result.total,
        "train_images": len(train_y),
        "train_seconds": round(seconds, 1),
        **({"test_accuracy_by_epoch": by_epoch} if by_epoch else {}),
        "recipe": recipe.to_dict(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
    }
    path = reference_path(name)
    atomic_write(path, lambda tmp: torch.save(model.net.state_dict(), tmp))
    atomic_write_json(path.with_suffix(".json"), metadata, indent=2)
    say(f"reference model '{name}': test accuracy {result.accuracy:.2f} % after {seconds:.0f} s; cached at {path}")
    if result.accuracy < recipe.min_accuracy:
        say(f"warning: '{name}' reached {result.accuracy:.2f} %, below the recipe's target of {recipe.min_accuracy} %")
    return metadata


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reference_metadata(name: str) -> dict | None:
    """What the weights in use were measured at (the shipped ones', else the cached ones'), or None."""
    path = available_reference(name)
    return None if path is None else _read_json(path.with_suffix(".json"))


def ensure_reference(name: str, *, progress: bool = False, say: Callable[[str], None] = log_info,
                     data_root: Path | None = None) -> Path:
    """The checkpoint of reference ``name``: shipped, cached, or trained now when neither is there."""
    path = available_reference(name)
    if path is None:
        train_reference(name, progress=progress, say=say, data_root=data_root)
        path = reference_path(name)
    return path
