"""``autocompress finetune``: recovery fine-tuning of a run's compressed candidates.

A fully evaluated candidate is rebuilt exactly as the search measured it
(:func:`~autocompress.engine.pipeline.build_candidate`: pruned channels removed, every
layer at its bit-width, BatchNorms folded) and trained for ``finetune.epochs`` epochs
on the data set's training split, with quantization-aware training
(:mod:`autocompress.compress.qat`), SpikingJelly's surrogate gradients through the
neurons, and distillation from the uncompressed model (its logits; optionally the
membrane potentials of the kept channels, the quantity the drift proxy compares).

Nothing is chosen by validation data: the last epoch is the result, whatever the
validation accuracies shown as progress say. The result is measured once, after
training, on the file the point exports to (``finetune/<id>/tuned.safetensors``,
loaded back): on the search's validation items (the accuracy its feasibility is judged
by, comparable with the untuned one) and, when the run has one, on the held-out split.

One process trains by default; ``finetune.workers: N`` trains data-parallel (DDP) on N
Ray Train workers. Either way the state is checkpointed at the end of every epoch in
``RUN_DIR/finetune/<id>/checkpoint.pt`` (written atomically, read back with
``weights_only``): a fine-tuning killed at any point resumes from its last epoch.
With Ray on several nodes the run directory must be on storage every node mounts.

The package: ``training`` (one candidate's training loop and checkpoints), ``ray_train``
(the same loop on Ray Train workers) and ``command`` (what ``autocompress finetune`` does).
"""

from __future__ import annotations

from autocompress.engine.finetune.command import finetune, finetune_run, held_out_text, select_points
from autocompress.engine.finetune.training import (
    CHECKPOINT,
    FINETUNE_DIR,
    FORMAT,
    META,
    PROGRESS,
    TUNED,
    Job,
    epoch_indices,
    membrane_loss,
    read_checkpoint,
    train_candidate,
    tune_dir,
)

__all__ = [
    "CHECKPOINT", "FINETUNE_DIR", "FORMAT", "META", "PROGRESS", "TUNED", "Job", "epoch_indices", "finetune",
    "finetune_run", "held_out_text", "membrane_loss", "read_checkpoint", "select_points", "train_candidate",
    "tune_dir",
]
