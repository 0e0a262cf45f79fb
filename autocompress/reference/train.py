"""Train, cache and look up the reference models of :mod:`autocompress.recipes`.

A reference model is trained once per machine and cached under
``$AUTOCOMPRESS_CACHE/references`` (default ``~/.cache/autocompress``): the state
dict ``NAME.pt`` and ``NAME.json`` with the recipe, the accuracy reached and the
training time. Files are written atomically, so an interrupted training leaves no
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import TypeAdapter

from autocompress.atomic import atomic_write
from autocompress.data import DataBundle, TensorImageDataset, digits_split
from autocompress.evaluation import evaluate_accuracy
from autocompress.models import create_model
from autocompress.recipes import ReferenceRecipe, get_recipe
from autocompress.cachedir import cache_dir
from autocompress.spec import ModelSpec
from autocompress.vocabulary import DATASETS


def reference_path(name: str) -> Path:
    return cache_dir() / "references" / f"{name}.pt"


def _training_data(recipe: ReferenceRecipe) -> tuple[torch.Tensor, torch.Tensor, DataBundle]:
    if recipe.dataset != "digits":
        raise NotImplementedError(f"reference training on {recipe.dataset}")
    train_x, train_y, test_x, test_y = digits_split(recipe.image_size)
    test = DataBundle(TensorImageDataset(test_x, test_y), test_x[:0], test_y[:0], DATASETS["digits"].classes,
                      "digits test split")
    return train_x, train_y, test


def _shift(batch: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels, padding with the background value."""
    if max_shift <= 0:
        return batch
    size = batch.shape[-1]
    padded = F.pad(batch, [max_shift] * 4, value=float(batch.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


def train_classifier(
    model, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
    weight_decay: float, max_shift: int = 0, seed: int = 0, progress: bool = False,
) -> None:
    """Train an SViT in place: AdamW with a one-cycle schedule, cross-entropy on the
    logits averaged over time steps, optional random-shift augmentation."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(labels) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    bar = Progress(
        TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=not progress, transient=True,
    )
    with bar:
        task = bar.add_task("train", total=epochs, loss=float("nan"))
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(labels), generator=generator)
            total_loss = 0.0
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                loss = F.cross_entropy(model(_shift(images[index], max_shift, generator)), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(index)
            bar.update(task, advance=1, loss=total_loss / len(labels))
    model.eval()


def train_reference(name: str, *, progress: bool = True, say: Callable[[str], None] = print) -> dict:
    """Train reference model ``name`` from its recipe (CPU), cache it, return its metadata."""
    recipe = get_recipe(name)
    torch.manual_seed(recipe.seed)
    model_spec = TypeAdapter(ModelSpec).validate_python({"family": recipe.family, "args": recipe.args})
    model = create_model(model_spec)
    train_x, train_y, test = _training_data(recipe)
    say(f"training reference model '{name}': {recipe.description}; {recipe.epochs} epochs on {len(train_y)} images")
    start = time.perf_counter()
    train_classifier(
        model, train_x, train_y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
        weight_decay=recipe.weight_decay, max_shift=recipe.max_shift, seed=recipe.seed, progress=progress,
    )
    seconds = time.perf_counter() - start
    result = evaluate_accuracy(model, test, batch_size=256)
    metadata = {
        "name": name,
        "test_accuracy": result.accuracy,
        "test_images": result.total,
        "train_images": len(train_y),
        "train_seconds": round(seconds, 1),
        "recipe": recipe.to_dict(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads",
    }
    path = reference_path(name)
    atomic_write(path, lambda tmp: torch.save(model.net.state_dict(), tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(metadata, indent=2)))
    say(f"reference model '{name}': test accuracy {result.accuracy:.2f} % after {seconds:.0f} s; cached at {path}")
    if result.accuracy < recipe.min_accuracy:
        say(f"warning: '{name}' reached {result.accuracy:.2f} %, below the recipe's target of {recipe.min_accuracy} %")
    return metadata


def reference_metadata(name: str) -> dict | None:
    path = reference_path(name).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_reference(name: str, *, progress: bool = True, say: Callable[[str], None] = print) -> Path:
    """The cached checkpoint of reference ``name``, trained first when it is missing."""
    get_recipe(name)
    path = reference_path(name)
    if not path.is_file() or reference_metadata(name) is None:
        train_reference(name, progress=progress, say=say)
    return path
