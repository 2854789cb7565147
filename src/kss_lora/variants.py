"""Variants of one run that a config cannot express, given to :class:`kss_lora.runner.Run` when it is built.

Label-noise detection (:mod:`kss_lora.detect`) trains many variants of one configured run: on a *subset*
of the training split (k-fold cross-fitting, clean-and-retrain), on *relabelled* examples (threshold
samples, relabelling), with *extra output classes* (AUM's fake class), *continuing* from a trained adapter
of smaller rank (RACT's curriculum), with a denser *checkpoint schedule*, or with a *capped evaluation*
(auxiliary runs whose val/test metrics nobody reads). :class:`RunVariant` names them; the run applies
them while it is prepared, so nothing edits a prepared run from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, KSSError


@dataclass(frozen=True, eq=False)  # arrays inside: compared by identity
class RunVariant:
    """How a run differs from what its config says (all default: exactly the configured run).

    - ``train_index``: rows of the prepared training split to train on (classification);
    - ``train_labels``: full-length replacement labels of the training split, applied before ``train_index``;
    - ``extra_classes``: that many more classifier outputs, carried by no example until relabelled;
    - ``initial_adapter``: a trained model whose adapter (equal or smaller rank) the run starts from
      (:func:`grow_rank`);
    - ``checkpoints_per_epoch``: eval-mode dynamics checkpoints per epoch (needs ``tracking.per_example``);
    - ``eval_examples``: evaluate validation on its first N examples only, and skip the test split.
    """

    train_index: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    extra_classes: int = 0
    initial_adapter: nn.Module | None = None
    checkpoints_per_epoch: int | None = None
    eval_examples: int | None = None

    def validate(self, task: str) -> RunVariant:
        needs_classes = (
            self.train_index is not None
            or self.train_labels is not None
            or self.extra_classes
            or self.eval_examples is not None
        )
        if needs_classes and task != "classification":
            raise ConfigError(
                "model.task",
                f"subsets, relabelling, extra classes and capped evaluation need classification, not {task!r}",
            )
        if self.extra_classes < 0:
            raise ConfigError("extra_classes", f"must be >= 0, got {self.extra_classes}")
        if self.checkpoints_per_epoch is not None and self.checkpoints_per_epoch < 1:
            raise ConfigError("checkpoints_per_epoch", f"must be at least 1, got {self.checkpoints_per_epoch}")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ConfigError("eval_examples", f"must be at least 1, got {self.eval_examples}")
        return self

    def every_steps(self, n_train: int, batch_size: int) -> int | None:
        """``tracking.every_steps`` giving ``checkpoints_per_epoch`` checkpoints (the epoch end is one)."""
        if self.checkpoints_per_epoch is None or self.checkpoints_per_epoch <= 1:
            return None
        steps = math.ceil(n_train / batch_size)
        return max(1, math.ceil(steps / self.checkpoints_per_epoch))


def grow_rank(target: nn.Module, source: nn.Module) -> int:
    """Copy a trained adapter into a freshly built one of equal or larger rank, preserving its function.

    For each LoRA pair the first ``r_old`` rows of ``A`` and columns of ``B`` take the trained values; the
    new rows of ``A`` keep their random init and the new columns of ``B`` are zero, so ``B A`` is unchanged
    at the start (up to the ratio of PEFT scalings, which is folded into ``B``). Other trainable tensors
    (the classifier head) are copied when shapes match. Returns the number of tensors copied.
    """
    src_params = dict(source.named_parameters())
    src_modules = dict(source.named_modules())
    copied = 0
    with torch.no_grad():
        for mod_name, module in target.named_modules():
            scaling: Any = getattr(module, "scaling", None)
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
