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

Timing: :func:`prepare` records how long building the run took (data, tokenizer, model, tokenization) and
:func:`train` times the run's own phases by wrapping three of that instance's methods while it executes —
``step`` (optimizer steps), ``checkpoint`` (eval-mode passes over the training set: the dynamics checkpoints
every detector reads, epoch ends included) and ``evaluate_split`` (every eval pass; validation and test are
what is left after the checkpoints) — so :attr:`Trained.timing` says what dominates a detector's cost.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    timing: dict[str, float] = field(default_factory=dict)

    def dynamics(self) -> Any:
        from kss_lora.dynamics.records import load_dynamics

        return load_dynamics(self.directory)


def configure(cfg: RunConfig, *, rank: int | None = None, lr: float | None = None, track: bool = True) -> RunConfig:
    """A copy of ``cfg`` for a detection run: no adapter files, no progress bar, optional rank and learning-rate
    change, and per-example checkpoint tracking on (``every_steps`` is set per run by :func:`prepare`)."""
    out = copy.deepcopy(cfg)
    out.output.save_adapter = False
    out.train.progress = False
    if rank is not None:
        out.method.rank = int(rank)
    if lr is not None:
        out.train.lr = float(lr)
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
    t0 = time.perf_counter()
    run = Run(cfg, checkpoints_per_epoch=checkpoints_per_epoch, **variant)
    run.detect_prepare_s = time.perf_counter() - t0  # read by train(): building the run is part of its cost
    return run


def training_labels(cfg: RunConfig) -> np.ndarray:
    """The labels a run of ``cfg`` trains on (after noise injection), without building a model."""
    from kss_lora.tasks import make_task

    task = make_task(cfg)
    task.load_data()
    return np.asarray(task.data.train.labels, dtype=np.int64).copy()


PHASES = {"step": "train_steps_s", "checkpoint": "checkpoint_s", "evaluate_split": "eval_all_s"}


def _timed(seconds: dict[str, float], key: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - t0

    return timed


def train(run: Any, directory: str | Path) -> Trained:
    """Execute a prepared run, timing its phases; raise :class:`DetectionRunFailed` if it failed.

    ``Trained.timing``: ``prepare_s`` (building the run), ``train_steps_s``, ``checkpoint_s`` (eval-mode
    passes over the training set), ``eval_s`` (validation and test passes), ``other_s`` (the rest of
    ``execute``: run directory, recorder, result), ``wall_s`` (prepare + execute) and ``n_train``, ``epochs``.
    """
    directory = Path(directory)
    train_ids = np.asarray(run.train_batches.ids).copy()
    seconds = dict.fromkeys(PHASES.values(), 0.0)
    for name, key in PHASES.items():  # instance attributes shadow the class's methods while the run executes
        setattr(run, name, _timed(seconds, key, getattr(run, name)))
    t0 = time.perf_counter()
    try:
        result = run.execute(directory)
    finally:
        for name in PHASES:
            delattr(run, name)
    execute_s = time.perf_counter() - t0
    if result.get("status") != "ok":
        raise DetectionRunFailed(f"run {directory} failed: {result.get('error')}")
    prepare_s = float(getattr(run, "detect_prepare_s", 0.0))
    eval_s = max(seconds["eval_all_s"] - seconds["checkpoint_s"], 0.0)
    used = seconds["train_steps_s"] + seconds["checkpoint_s"] + eval_s
    timing = {
        "prepare_s": prepare_s,
        "train_steps_s": seconds["train_steps_s"],
        "checkpoint_s": seconds["checkpoint_s"],
        "eval_s": eval_s,
        "other_s": max(execute_s - used, 0.0),
        "wall_s": prepare_s + execute_s,
        "n_train": float(train_ids.size),
        "epochs": float(run.cfg.train.epochs),
    }
    return Trained(run=run, directory=directory, result=result, train_ids=train_ids, timing=timing)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
