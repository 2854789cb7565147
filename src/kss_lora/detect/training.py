"""Training runs for the detectors, built on :class:`kss_lora.runner.Run` without changing it.

Detection needs variants of one run that the config cannot express: train on a *subset* of the training
split (k-fold cross-fitting, clean-and-retrain), on *relabelled* examples (threshold samples, relabelling),
with one *extra output class* (AUM threshold samples), or *continuing* from a smaller-rank adapter
(RACT's curriculum). Each is a small edit of a prepared ``Run`` before ``execute``: ``Run.train`` reads the
task's ``train_batches``, ``clean_train_labels`` and ``is_noisy``, the run's ``model`` and ``cfg.tracking``
only when it starts. Classification tasks only (:class:`kss_lora.tasks.classification.ClassificationTask`).

Every run trains on exactly ``run.train_batches``, so :attr:`Trained.train_ids` is the authoritative list
of examples a model saw (cross-fitting's no-leak guarantee is checked against it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kss_lora.config import RunConfig
from kss_lora.errors import KSSError

__all__ = ["DetectionRunFailed", "Trained", "prepare", "restrict", "softmax", "train"]


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


def prepare(cfg: RunConfig, *, extra_classes: int = 0) -> Any:
    """``Run(cfg)``; with ``extra_classes`` the classifier gets that many more outputs (AUM's fake class).

    The extra class is added by rebuilding the model exactly as ``Run.__init__`` does with a larger
    ``num_labels``: no example carries it until the caller relabels threshold samples.
    """
    from kss_lora.methods import wrap_model
    from kss_lora.models import load_model
    from kss_lora.runner import Run

    if cfg.model.task != "classification":
        raise KSSError(f"detect: label-noise detection needs model.task=classification, got {cfg.model.task!r}")
    run = Run(cfg)
    if extra_classes:
        base = load_model(
            cfg.model.name,
            task="classification",
            num_labels=run.data.num_labels + extra_classes,
            tokenizer=run.tokenizer,
            seed=cfg.train.seed,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        base = run.precision.before_adapters(base.to(run.device))
        wrapped = wrap_model(base, run.method, task_type=run.task.peft_task_type).to(run.device)
        run.model = run.precision.after_adapters(wrapped)
    return run


def subset_batches(batches: Any, index: np.ndarray, labels: np.ndarray | None = None) -> Any:
    """Rows ``index`` of a tokenized split (``runner.Batches``), optionally with replacement labels."""
    from kss_lora.tasks.classification import Batches

    index = np.asarray(index, dtype=np.int64)
    tt = None if batches.token_type_ids is None else [batches.token_type_ids[i] for i in index]
    y = batches.labels[index] if labels is None else np.asarray(labels, dtype=np.int64)[index]
    return Batches([batches.input_ids[i] for i in index], tt, y.copy(), batches.ids[index])


def restrict(run: Any, index: Sequence[int] | np.ndarray | None = None, *, labels: np.ndarray | None = None) -> None:
    """Train only on rows ``index`` of the prepared training split, with ``labels`` (full-length) if given.

    ``is_noisy`` is recomputed against the clean labels when labels change, so recorded dynamics and
    ``noise.npz`` stay honest (a relabelled example that got its true label back is no longer noisy).
    """
    task = run.task
    n = len(task.train_batches)
    index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
    if index.size == 0:
        raise KSSError("detect: a training run would have no examples (every example flagged?)")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (n,):
            raise KSSError(f"detect: replacement labels must have length {n}, got {labels.shape}")
    task.train_batches = subset_batches(task.train_batches, index, labels)
    new_labels = task.train_batches.labels
    task.data.train = task.data.train.subset(index).with_labels(new_labels)
    task.clean_train_labels = task.clean_train_labels[index]
    if task.is_noisy is not None:
        task.is_noisy = new_labels != task.clean_train_labels


def grow_rank(target: Any, source: Any) -> int:
    """Copy a trained adapter into a freshly built one of equal or larger rank, preserving its function.

    For each LoRA pair the first ``r_old`` rows of ``A`` and columns of ``B`` take the trained values; the
    new rows of ``A`` keep their random init and the new columns of ``B`` are zero, so ``B A`` is unchanged
    at the start (up to the ratio of PEFT scalings, which is folded into ``B``). Other trainable tensors
    (the classifier head) are copied when shapes match. Returns the number of tensors copied.
    """
    import torch

    src_params = dict(source.named_parameters())
    src_modules = dict(source.named_modules())
    copied = 0
    with torch.no_grad():
        for mod_name, module in target.named_modules():
            scaling = getattr(module, "scaling", None)
            if not isinstance(scaling, dict) or mod_name not in src_modules:
                continue
            src_scaling = getattr(src_modules[mod_name], "scaling", {})
            for adapter, s_new in scaling.items():
                ratio = float(src_scaling.get(adapter, s_new)) / float(s_new) if s_new else 1.0
                a_new = module.lora_A[adapter].weight
                b_new = module.lora_B[adapter].weight
                a_old = src_modules[mod_name].lora_A[adapter].weight
                b_old = src_modules[mod_name].lora_B[adapter].weight
                r_old, r_new = a_old.shape[0], a_new.shape[0]
                if r_old > r_new or a_old.shape[1:] != a_new.shape[1:] or b_old.shape[0] != b_new.shape[0]:
                    raise KSSError(f"detect: cannot grow rank {r_old} -> {r_new} at {mod_name}")
                a_new[:r_old].copy_(a_old)
                b_new.zero_()
                b_new[:, :r_old].copy_(b_old * ratio)
                copied += 2
        for name, p in target.named_parameters():
            if p.requires_grad and "lora_" not in name and name in src_params and src_params[name].shape == p.shape:
                p.copy_(src_params[name])
                copied += 1
    return copied


def set_checkpoints(run: Any, per_epoch: int) -> None:
    """Record ``per_epoch`` eval-mode checkpoints per epoch (the epoch end is always one of them)."""
    if not run.cfg.tracking.per_example or per_epoch <= 1:
        return
    steps = math.ceil(len(run.train_batches) / run.cfg.train.batch_size)
    run.cfg.tracking.every_steps = max(1, math.ceil(steps / per_epoch))


def train(
    run: Any, directory: str | Path, *, checkpoints_per_epoch: int = 2, eval_examples: int | None = None
) -> Trained:
    """Execute a prepared (and possibly restricted) run; raise :class:`DetectionRunFailed` if it failed.

    ``eval_examples`` caps the validation split at that many examples and skips the test split: for
    auxiliary runs (other ranks, AUM passes, folds) whose val/test metrics nobody reads, evaluation would
    otherwise cost as much as training on a small training set.
    """
    set_checkpoints(run, checkpoints_per_epoch)
    if eval_examples is not None:
        task = run.task
        n = min(int(eval_examples), len(task.val_batches))
        task.val_batches = subset_batches(task.val_batches, np.arange(n))
        task.test_batches = None
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
