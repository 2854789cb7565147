"""What the runner needs from a task (classification, causal-LM): data, model head, batches, losses.

The runner owns everything that is the same for every task: the optimizer, schedule, KSS masks, precision,
data-parallel sharding, the run directory. A task owns what differs: how examples are read and corrupted,
how they are tokenized and batched, and how one example's loss is computed. Both tasks reduce an example
to **one loss in nats** (cross-entropy of the label; mean token loss of the response), so ``train_loss``,
``val_loss``, the gap and the per-example dynamics tools mean the same thing on either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RunConfig


@dataclass
class EvalOutput:
    """Eval-mode outputs for a set of examples (aligned with the batches' example order).

    ``record`` is what the dynamics recorder stores per example: class logits ``[N, K]`` for classification;
    for causal-LM the two-column *pseudo-logits* of :func:`loss_to_pseudo_logits`, whose cross-entropy
    against class 0 is exactly the example's loss, so every dynamics tool works unchanged.
    """

    loss: np.ndarray
    record: np.ndarray
    correct: np.ndarray | None = None
    tokens: np.ndarray | None = None
    nll_sum: np.ndarray | None = None

    def subset(self, index: np.ndarray) -> EvalOutput:
        pick = lambda a: a[index] if a is not None else None  # noqa: E731
        return EvalOutput(
            self.loss[index], self.record[index], pick(self.correct), pick(self.tokens), pick(self.nll_sum)
        )

    @staticmethod
    def assemble(parts: list[tuple[np.ndarray, EvalOutput]], n: int) -> EvalOutput:
        """Put shards (``(index, outputs)`` from each data-parallel rank) back in example order."""
        parts = [(index, part) for index, part in parts if len(index)]  # a rank may get no examples
        first = parts[0][1]

        def stack(name: str) -> np.ndarray | None:
            if getattr(first, name) is None:
                return None
            sample = getattr(first, name)
            out = np.zeros((n, *sample.shape[1:]), dtype=sample.dtype)
            for index, part in parts:
                out[index] = getattr(part, name)
            return out

        return EvalOutput(*(stack(k) for k in ("loss", "record", "correct", "tokens", "nll_sum")))


def loss_to_pseudo_logits(loss: np.ndarray) -> np.ndarray:
    """``[0, log(e^loss − 1)]`` per example: cross-entropy vs class 0 equals ``loss``, p(class 0) = e^−loss.

    For a response, e^−loss is the geometric-mean token probability; "correct" (margin > 0) means it is
    above 1/2, the same ln 2 threshold the dynamics tools use for learning time.
    """
    loss = np.maximum(np.asarray(loss, dtype=np.float64), 1e-12)
    z = np.log(np.expm1(loss))
    return np.stack([np.zeros_like(z), z], axis=-1).astype(np.float32)


class Task(ABC):
    """One training task. The runner calls, in order: :meth:`load_data`, :meth:`build_model`,
    :meth:`tokenize`; then :meth:`train_losses` per micro-batch and :meth:`evaluate` at checkpoints."""

    name: str
    peft_task_type: str

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.is_noisy: np.ndarray | None = None
        self.train_batches: Any = None
        self.val_batches: Any = None
        self.test_batches: Any = None
        self.heldout_batches: Any = None
        self.pad_id = 0

    @abstractmethod
    def load_data(self) -> None:
        """Read the splits and inject noise (raises KSSError on bad input, before anything is written)."""

    @abstractmethod
    def build_model(self, tokenizer: Any, extra_classes: int = 0) -> nn.Module:
        """The base model for this task (before adapters); ``extra_classes`` more outputs (classification)."""

    @abstractmethod
    def tokenize(self, tokenizer: Any) -> None:
        """Tokenize every split into the ``*_batches`` attributes."""

    @abstractmethod
    def train_losses(
        self,
        model: nn.Module,
        batches: Any,
        index: np.ndarray,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Per-example training losses ``[B]`` (graph attached) and their dynamics records ``[B, K]``."""

    @abstractmethod
    def evaluate(
        self,
        model: nn.Module,
        batches: Any,
        index: np.ndarray,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> EvalOutput:
        """Eval-mode outputs for the examples ``index`` of ``batches`` (in that order)."""

    @abstractmethod
    def split_metrics(self, name: str, out: EvalOutput) -> dict[str, Any]:
        """Summary metrics of one split, keys prefixed by ``name`` (``val_loss``, ``val_accuracy`` ...)."""

    def clean_train_output(self, noisy: EvalOutput, evaluate: Callable[[Any], EvalOutput]) -> EvalOutput:
        """Training-set outputs against the *clean* targets (docs/spec.md §2 ``train_loss_clean``).

        ``noisy`` is the eval pass on the targets trained on; ``evaluate(batches)`` runs another pass when
        the clean targets need one (a swapped response is different tokens; a flipped label is not).
        """
        return noisy

    def tracked_rows(self) -> np.ndarray | None:
        """Positions in the training split that per-example dynamics record (``tracking.train_role``); None:
        every row."""
        return None

    @abstractmethod
    def recorder_kwargs(self) -> dict[str, Any]:
        """Labels/ids (and truth mask) for :class:`~kss_lora.dynamics.records.DynamicsRecorder`."""

    def save_extra(self, directory: Any) -> None:
        """Task-specific files written into the run directory before training (e.g. ``noise.npz``)."""
        return None

    def result_extra(self) -> dict[str, Any]:
        return {}
