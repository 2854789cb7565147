"""Training runs for the detectors: variants of one configured :class:`kss_lora.runner.Run`.

Detection needs variants of one run that the config cannot express: train on a *subset* of the training
split (k-fold cross-fitting, clean-and-retrain), on *relabelled* examples (threshold samples, relabelling),
with one *extra output class* (AUM threshold samples), *continuing* from a smaller-rank adapter (RACT's
curriculum), with denser checkpoints or a capped evaluation. Each is a keyword argument of ``Run``
(:class:`kss_lora.variants.RunVariant`), given to :func:`prepare`; nothing edits a prepared run.
Classification tasks only (:class:`kss_lora.tasks.classification.ClassificationTask`).

Every run trains on exactly ``run.train_batches``, so :attr:`Trained.train_ids` is the authoritative list
of examples a model saw (cross-fitting's no-leak guarantee is checked against it); ``run.full_train_batches``
is the training split before any subset (the rows a fold's model scores).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kss_lora.config import RunConfig
from kss_lora.errors import KSSError
from kss_lora.tasks.classification import subset_batches
from kss_lora.variants import grow_rank

__all__ = [
    "DetectionRunFailed",
    "Trained",
    "grow_rank",
    "prepare",
    "softmax",
    "subset_batches",
    "train",
    "training_labels",
]


class DetectionRunFailed(RuntimeError):
    """A training run inside a detection pipeline failed (diverged, crashed); see its run directory."""


@dataclass
class Trained:
    """A finished run: the prepared ``Run`` (model in memory), its ``result.json`` and what it trained on."""

    run: Any
    directory: Path
    result: dict[str, Any]
    train_ids: np.ndarray

    def dynamics(self) -> Any:
        from kss_lora.dynamics.records import load_dynamics

        return load_dynamics(self.directory)


def configure(cfg: RunConfig, *, rank: int | None = None, track: bool = True) -> RunConfig:
    """A copy of ``cfg`` for a detection run: no adapter files, no progress bar, optional rank change,
    and per-example checkpoint tracking on (``every_steps`` is set per run by :func:`prepare`)."""
    out = copy.deepcopy(cfg)
    out.output.save_adapter = False
    out.train.progress = False
    if rank is not None:
        out.method.rank = int(rank)
    out.tracking.per_example = track
    out.tracking.free = False
    out.tracking.every_steps = None
    out.tracking.heldout = None
    return out.validate()


def prepare(cfg: RunConfig, *, checkpoints_per_epoch: int = 2, **variant: Any) -> Any:
    """``Run(cfg, **variant)`` for a classification config; ``variant`` as in :class:`kss_lora.runner.Run`
    (``train_index``, ``train_labels``, ``extra_classes``, ``initial_adapter``, ``eval_examples``).

    ``checkpoints_per_epoch`` eval-mode checkpoints per epoch are recorded when tracking is on (the epoch
    end is always one of them).
    """
    from kss_lora.runner import Run

    if cfg.model.task != "classification":
        raise KSSError(f"detect: label-noise detection needs model.task=classification, got {cfg.model.task!r}")
    return Run(cfg, checkpoints_per_epoch=checkpoints_per_epoch, **variant)


def training_labels(cfg: RunConfig) -> np.ndarray:
    """The labels a run of ``cfg`` trains on (after noise injection), without building a model."""
    from kss_lora.tasks import make_task

    task = make_task(cfg)
    task.load_data()
    return np.asarray(task.data.train.labels, dtype=np.int64).copy()


def train(run: Any, directory: str | Path) -> Trained:
    """Execute a prepared run; raise :class:`DetectionRunFailed` if it failed."""
    directory = Path(directory)
    train_ids = np.asarray(run.train_batches.ids).copy()
    result = run.execute(directory)
    if result.get("status") != "ok":
        raise DetectionRunFailed(f"run {directory} failed: {result.get('error')}")
    return Trained(run=run, directory=directory, result=result, train_ids=train_ids)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
