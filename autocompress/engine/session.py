"""A spec made concrete: the model with its weights, the data, the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from autocompress.compress import baseline_footprint
from autocompress.console import log_info
from autocompress.data import DataBundle, holdout_split, load_data, stratified_order
from autocompress.evaluation import EvaluationResult, evaluate_accuracy, resolve_device
from autocompress.errors import CheckpointError, DataError, ModelError
from autocompress.models import SViT, canonical_family, create_model, load_checkpoint
from autocompress.spec import Spec
from autocompress.vocabulary import REFERENCE_PREFIX


def resolve_checkpoint(spec: Spec, *, train_missing: bool = True, progress: bool = False,
                       say: Callable[[str], None] = log_info) -> str | None:
    """The checkpoint file of a spec; a ``reference:`` model is trained on first use."""
    checkpoint = spec.model.checkpoint
    if checkpoint is None or not checkpoint.startswith(REFERENCE_PREFIX):
        return checkpoint
    from autocompress.reference import available_reference, ensure_reference

    name = checkpoint[len(REFERENCE_PREFIX):]
    if not train_missing and available_reference(name) is None:
        raise CheckpointError(f"model.checkpoint: reference model '{name}' is not trained yet; run `autocompress train-reference {name}`")
    return str(ensure_reference(name, progress=progress, say=say, data_root=spec.data.root))


def _declared_classes(model: SViT) -> int | None:
    """The outputs a family's args declare (None for a custom model: its args are the factory's)."""
    return model.args.get("num_classes") if model.family != "custom" else None


def _check_fit(model: SViT, data: DataBundle, device: torch.device) -> None:
    """The model takes the data's images and has one output per class of the data,
    checked before the first batch (a custom model by one forward pass)."""
    outputs = _declared_classes(model)
    if outputs is None:
        image = data.calibration[:1].to(device)
        try:
            with torch.inference_mode():
                outputs = model(image).shape[1]
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"model: the {model.family} model cannot take the data's images (shape "
                             f"{list(image.shape)}): {first}; check the model's input channels and size "
                             "against data.dataset and data.image_size") from None
    if outputs != data.num_classes:
        raise DataError(f"data: {data.num_classes} classes in the data ({data.description}), but the model has "
                        f"{outputs} outputs; class i of the data must be output i of the model (set "
                        "model.args.num_classes, or give the data the model was trained on)")


@dataclass
class Session:
    spec: Spec
    model: SViT
    data: DataBundle
    device: torch.device
    checkpoint: str | None
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # what every candidate reuses

    @classmethod
    def open(cls, spec: Spec, *, device: str | None = None, progress: bool = False,
             say: Callable[[str], None] = log_info) -> Session:
        """Build the model, load its checkpoint and the data; ``device`` overrides the spec's."""
        device = resolve_device(device or spec.execution.device)
        checkpoint = resolve_checkpoint(spec, progress=progress, say=say)
        model = create_model(spec.model)
        if checkpoint is not None:
            conversion = load_checkpoint(model.net, checkpoint, family=canonical_family(spec.model.family),
                                         ema=spec.model.ema)
            if conversion:
                say(f"checkpoint: {conversion}")
        else:
            say("warning: model.checkpoint is not set; the model has untrained (random) weights")
        data = load_data(spec.data, model_classes=_declared_classes(model))
        model = model.to(device)
        _check_fit(model, data, device)
        return cls(spec=spec, model=model, data=data, device=device, checkpoint=checkpoint)

    def evaluate(self, model: SViT | None = None, *, progress: bool = False, indices=None,
                 autocast: str | None = None, should_stop=None) -> EvaluationResult:
        """Top-1 of ``model`` (the base model by default) over the validation items
        ``indices`` (all, in item order, by default), under the spec's autocast setting
        unless ``autocast`` says otherwise."""
        return evaluate_accuracy(
            model or self.model, self.data, batch_size=self.spec.data.batch_size,
            workers=self.spec.data.workers, device=self.device, progress=progress, indices=indices,
            autocast=self.spec.evaluation.autocast if autocast is None else autocast, should_stop=should_stop,
        )

    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The validation labels, the selection items and the held-out items (none
        unless data.validation.holdout is set)."""
        labels = self.data.validation_labels()
        validation = self.spec.data.validation
        if not validation.holdout:
            return labels, np.arange(len(labels)), np.arange(0)
        selection, held = holdout_split(labels, validation.holdout, validation.holdout_seed)
        if len(selection) == 0 or len(held) == 0:
            raise DataError(f"data.validation.holdout {validation.holdout:g}: {len(labels)} validation images leave "
                            f"{len(selection)} for the search and {len(held)} held out; both need images (lower "
                            "or raise the fraction, or give more validation images)")
        return labels, selection, held

    def evaluation_order(self):
        """The validation items the search uses (all of them, or the selection split) in
        the run's seeded, class-stratified order."""
        labels, selection, _ = self._split()
        return selection[stratified_order(labels[selection], self.spec.evaluation.order_seed)]

    def holdout_order(self):
        """The held-out validation items (data.validation.holdout), in item order; empty
        without a held-out split."""
        return self._split()[2]

    def footprint(self) -> int:
        return baseline_footprint(self.model)
