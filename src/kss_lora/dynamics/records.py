"""Recording per-example dynamics during a run, and reading them back.

Two sources (docs/spec.md §2, issue "training dynamics"):

- **free**: the logits of the training forward pass itself, detached — no extra compute, but they carry
  the mask/dropout noise of training and each example is seen once per epoch at a different step;
- **checkpoint**: an eval-mode pass over the whole training set (and any held-out tracked items) at step 0,
  every ``tracking.every_steps`` steps and at each epoch end. The epoch-end pass is the one that measures
  ``train_loss`` anyway, so it costs nothing extra.

Everything is stored as logits in ``dynamics.npz``; loss, p(y), margin and correctness are derived on
load (:func:`kss_lora.dynamics.metrics.per_example_from_logits`), so nothing is stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..rundir import RunDirectory
from .metrics import ExampleOutputs, per_example_from_logits

DYNAMICS_NAME = "dynamics.npz"


@dataclass
class DynamicsRecorder:
    """Collects logits in memory during a run; :meth:`save` writes them atomically at the end."""

    labels: np.ndarray
    ids: np.ndarray
    clean_labels: np.ndarray
    is_noisy: np.ndarray | None = None
    class_counts: np.ndarray | None = None  # the whole training set's, when only some rows are recorded
    heldout_labels: np.ndarray | None = None
    heldout_ids: np.ndarray | None = None
    steps_per_epoch: int = 1
    ckpt_step: list[int] = field(default_factory=list)
    ckpt_logits: list[np.ndarray] = field(default_factory=list)
    heldout_logits: list[np.ndarray] = field(default_factory=list)
    free_step: list[np.ndarray] = field(default_factory=list)
    free_index: list[np.ndarray] = field(default_factory=list)
    free_logits: list[np.ndarray] = field(default_factory=list)

    def record_batch(self, step: int, index: np.ndarray, logits: np.ndarray) -> None:
        """Free source: logits the training step computed anyway (``index`` into the training split)."""
        self.free_step.append(np.full(len(index), step, dtype=np.int64))
        self.free_index.append(np.asarray(index, dtype=np.int64))
        self.free_logits.append(np.asarray(logits, dtype=np.float32))

    def record_checkpoint(self, step: int, train_logits: np.ndarray, heldout_logits: np.ndarray | None) -> None:
        self.ckpt_step.append(step)
        self.ckpt_logits.append(np.asarray(train_logits, dtype=np.float32))
        if heldout_logits is not None:
            self.heldout_logits.append(np.asarray(heldout_logits, dtype=np.float32))

    def save(self, run_dir: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {
            "labels": self.labels,
            "ids": self.ids,
            "clean_labels": self.clean_labels,
            "steps_per_epoch": np.array(self.steps_per_epoch),
            "ckpt_step": np.array(self.ckpt_step, dtype=np.int64),
            "ckpt_logits": np.stack(self.ckpt_logits),
        }
        if self.is_noisy is not None:
            arrays["is_noisy"] = self.is_noisy
        if self.class_counts is not None:
            arrays["train_class_counts"] = np.asarray(self.class_counts, dtype=np.int64)
        if self.heldout_logits:
            arrays.update(
                heldout_logits=np.stack(self.heldout_logits),
                heldout_labels=self.heldout_labels,
                heldout_ids=self.heldout_ids,
            )
        if self.free_logits:
            arrays.update(
                free_step=np.concatenate(self.free_step),
                free_index=np.concatenate(self.free_index),
                free_logits=np.concatenate(self.free_logits),
            )
        return RunDirectory(run_dir).write_arrays(DYNAMICS_NAME, arrays, compressed=True)


@dataclass
class Dynamics:
    """Per-example dynamics of one run, as read from ``dynamics.npz``."""

    arrays: dict[str, np.ndarray]

    @property
    def labels(self) -> np.ndarray:
        return self.arrays["labels"]

    @property
    def clean_labels(self) -> np.ndarray:
        return self.arrays["clean_labels"]

    @property
    def is_noisy(self) -> np.ndarray | None:
        return self.arrays.get("is_noisy")

    @property
    def ckpt_step(self) -> np.ndarray:
        return self.arrays["ckpt_step"]

    @property
    def epoch_end(self) -> np.ndarray:
        """Boolean mask of checkpoints that close an epoch (the cartography/AUM time axis)."""
        spe = int(self.arrays["steps_per_epoch"])
        steps = self.ckpt_step
        last = steps.max()
        return (steps > 0) & ((steps % spe == 0) | (steps == last))

    def checkpoint(self, *, labels: np.ndarray | None = None, epochs_only: bool = False) -> ExampleOutputs:
        """Eval-mode trajectories ``[T, N]`` against the trained-on labels (or ``labels``)."""
        logits = self.arrays["ckpt_logits"]
        if epochs_only:
            logits = logits[self.epoch_end]
        return per_example_from_logits(
            logits, np.broadcast_to(self.labels if labels is None else labels, logits.shape[:2])
        )

    def heldout(self) -> ExampleOutputs | None:
        if "heldout_logits" not in self.arrays:
            return None
        logits = self.arrays["heldout_logits"]
        return per_example_from_logits(logits, np.broadcast_to(self.arrays["heldout_labels"], logits.shape[:2]))

    def free(self) -> ExampleOutputs:
        """Training-pass trajectories ``[E, N]``: epoch e holds each example's logits from its step in epoch e."""
        if "free_logits" not in self.arrays:
            from ..errors import ConfigError

            raise ConfigError("tracking.free", "this run recorded no free (training-pass) dynamics: set it to true")
        spe = int(self.arrays["steps_per_epoch"])
        epoch = (self.arrays["free_step"] - 1) // spe
        n, k = len(self.labels), self.arrays["free_logits"].shape[1]
        logits = np.full((int(epoch.max()) + 1, n, k), np.nan, dtype=np.float32)
        logits[epoch, self.arrays["free_index"]] = self.arrays["free_logits"]
        complete = ~np.isnan(logits).any(axis=(1, 2))  # a max_steps cut can leave the last epoch partial
        logits = logits[complete]
        return per_example_from_logits(logits, np.broadcast_to(self.labels, logits.shape[:2]))


def load_dynamics(run_dir: str | Path) -> Dynamics:
    arrays = RunDirectory(run_dir).read_arrays(DYNAMICS_NAME)
    if arrays is None:
        from ..errors import DataError

        raise DataError(
            f"{Path(run_dir) / DYNAMICS_NAME}: no per-example dynamics in this run (set tracking.per_example: true)"
        )
    return Dynamics(arrays)
