"""Sequence classification: a class label per text (or text pair), cross-entropy loss, accuracy."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import ClassificationData, Split, load_classification_data, load_split
from ..dynamics.metrics import per_example_from_logits
from ..errors import DataError
from ..models import load_model
from ..rundir import RunDirectory
from .base import EvalOutput, Task
from .memory import enable_gradient_checkpointing, half_base_float_head


@dataclass
class Batches:
    """A tokenized split: token ids per example, labels, and the example ids."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(split: Split, tokenizer: Any, max_length: int) -> Batches:
    enc = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=max_length)
    return Batches(enc["input_ids"], enc.get("token_type_ids"), split.labels.copy(), split.ids)


def subset_batches(batches: Batches, index: np.ndarray, labels: np.ndarray | None = None) -> Batches:
    """Rows ``index`` of a tokenized split, optionally with replacement labels (full-length)."""
    index = np.asarray(index, dtype=np.int64)
    tt = None if batches.token_type_ids is None else [batches.token_type_ids[i] for i in index]
    y = batches.labels[index] if labels is None else np.asarray(labels, dtype=np.int64)[index]
    return Batches([batches.input_ids[i] for i in index], tt, y.copy(), batches.ids[index])


def collate(batches: Batches, index: np.ndarray, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    rows = [batches.input_ids[i] for i in index]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if batches.token_type_ids is not None:
        tt = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(index):
            tt[j, : len(batches.token_type_ids[i])] = torch.tensor(batches.token_type_ids[i])
        out["token_type_ids"] = tt.to(device)
    return out


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    batches: Batches,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    index: np.ndarray | None = None,
) -> np.ndarray:
    """Eval-mode logits [N, K] for every example (or those in ``index``, in that order); batched by length
    to waste little compute on padding."""
    was_training = model.training
    model.eval()
    index = np.arange(len(batches)) if index is None else np.asarray(index)
    order = np.argsort([len(batches.input_ids[i]) for i in index], kind="stable")  # positions in index
    out = np.zeros((0, 0), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        pos = order[start : start + batch_size]  # by position: index may repeat an example (FSDP2 padding)
        logits = model(**collate(batches, index[pos], pad_id, device)).logits.float().cpu().numpy()
        if not start:
            out = np.zeros((len(index), logits.shape[1]), dtype=np.float32)
        out[pos] = logits
    model.train(was_training)
    return out


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency class weights normalised to mean 1 over the classes present (``train.class_weights:
    balanced``, Steele's protocol, docs/spec.md §2). A class absent from ``labels`` gets weight 0: it has no
    examples to weight, and counting it would inflate the others."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = 1.0 / counts[present]
    return weights / weights[present].mean()


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(per_example_from_logits(logits, labels).loss.mean())


NOISE_NAME = "noise.npz"


class ClassificationTask(Task):
    name = "classification"
    peft_task_type = "SEQ_CLS"
    class_weights: np.ndarray | None = None  # train.class_weights: balanced, set at the first training batch

    def load_data(self) -> None:
        self.data: ClassificationData = load_classification_data(self.cfg.data)
        self.clean_train_labels = self.data.train.labels.copy()
        if self.cfg.noise.active:
            from ..noise import inject_label_noise

            n = self.cfg.noise
            result = inject_label_noise(
                self.data.train.labels,
                rate=None if n.transition is not None else n.rate,
                num_classes=self.data.num_labels,
                kind=n.kind,
                seed=n.seed if n.seed is not None else self.cfg.train.seed,
                transition=n.transition,
                pairs=n.pairs,
            )
            self.data.train = self.data.train.with_labels(result.noisy_labels)
            self.is_noisy = result.is_noisy

    def build_model(self, tokenizer: Any, extra_classes: int = 0) -> nn.Module:
        c = self.cfg
        model = load_model(
            c.model.name,
            task="classification",
            num_labels=self.data.num_labels + extra_classes,
            tokenizer=tokenizer,
            seed=c.train.seed,
            trust_remote_code=c.model.trust_remote_code,
        )
        # Loaded in float32 (the new head's init is the same whatever the dtype), then the body is cast.
        model = half_base_float_head(model, getattr(torch, c.model.dtype))
        if c.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model

    def tokenize(self, tokenizer: Any) -> None:
        ml = self.cfg.model.max_length
        self.pad_id = tokenizer.pad_token_id or 0
        self.train_batches = tokenize(self.data.train, tokenizer, ml)
        self.val_batches = tokenize(self.data.validation, tokenizer, ml)
        self.test_batches = tokenize(self.data.test, tokenizer, ml) if self.data.test is not None else None
        if self.cfg.tracking.heldout:
            heldout = load_split(
                self.cfg.data, self.cfg.tracking.heldout, self.data.label_names, where="tracking.heldout"
            )
            self.heldout_batches = tokenize(heldout, tokenizer, ml)
        self.tracked_rows()  # a train_role the file cannot honour fails here, before any step

    def train_losses(
        self,
        model: nn.Module,
        batches: Batches,
        index: np.ndarray,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> tuple[torch.Tensor, np.ndarray]:
        inputs = collate(batches, index, self.pad_id, device)
        with autocast():
            logits = model(**inputs).logits.float()
        labels = torch.as_tensor(batches.labels[index]).to(device)
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        if self.cfg.train.class_weights == "balanced":
            # Per example w[y_i] * CE_i, which the runner averages over the batch: unlike cross_entropy's
            # weighted mean (divided by the batch's sum of weights) this sums exactly over micro-batches and
            # data-parallel ranks; with mean-1 weights the two agree in expectation.
            if self.class_weights is None:
                # Once, from the labels trained on (after noise injection and any restriction by detect).
                self.class_weights = balanced_class_weights(batches.labels, logits.shape[1])
            losses = losses * torch.as_tensor(self.class_weights, dtype=losses.dtype, device=device)[labels]
        return losses, logits.detach().cpu().numpy()

    def evaluate(
        self,
        model: nn.Module,
        batches: Batches,
        index: np.ndarray,
        *,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager],
    ) -> EvalOutput:
        with autocast():
            logits = predict_logits(
                model, batches, batch_size=batch_size, pad_id=self.pad_id, device=device, index=index
            )
        return self.outputs_for(logits, batches.labels[index])

    @staticmethod
    def outputs_for(logits: np.ndarray, labels: np.ndarray) -> EvalOutput:
        ex = per_example_from_logits(logits, labels)
        return EvalOutput(loss=ex.loss, record=logits, correct=logits.argmax(1) == labels)

    def clean_train_output(self, noisy: EvalOutput, evaluate: Callable[[Any], EvalOutput]) -> EvalOutput:
        return self.outputs_for(noisy.record, self.clean_train_labels)

    def restrict(self, index: np.ndarray | None, labels: np.ndarray | None) -> None:
        """Train on rows ``index`` of the tokenized training split, with ``labels`` (full-length) if given.

        ``is_noisy`` is recomputed against the clean labels when labels change, so recorded dynamics and
        ``noise.npz`` stay honest (a relabelled example that got its true label back is no longer noisy).
        """
        from ..errors import KSSError

        n = len(self.train_batches)
        index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
        if index.size == 0:
            raise KSSError("detect: a training run would have no examples (every example flagged?)")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (n,):
                raise KSSError(f"detect: replacement labels must have length {n}, got {labels.shape}")
        self.train_batches = subset_batches(self.train_batches, index, labels)
        new_labels = self.train_batches.labels
        self.data.train = self.data.train.subset(index).with_labels(new_labels)
        self.clean_train_labels = self.clean_train_labels[index]
        if self.is_noisy is not None:
            self.is_noisy = new_labels != self.clean_train_labels

    def cap_evaluation(self, n: int) -> None:
        """Validate on the first ``n`` validation examples only and skip the test split."""
        self.val_batches = subset_batches(self.val_batches, np.arange(min(n, len(self.val_batches))))
        self.test_batches = None

    def split_metrics(self, name: str, out: EvalOutput) -> dict[str, Any]:
        return {f"{name}_loss": float(out.loss.mean()), f"{name}_accuracy": float(out.correct.mean())}

    def tracked_rows(self) -> np.ndarray | None:
        role = self.cfg.tracking.train_role
        if role is None:
            return None
        roles = self.data.train.roles
        if roles is None:
            raise DataError(
                "tracking.train_role: data.train has no kss_role field (the files kss entropy-data writes have one)"
            )
        rows = np.flatnonzero(roles == role)
        if rows.size == 0:
            raise DataError(
                f"tracking.train_role: no training row has kss_role {role!r}; the file has {sorted(set(roles))}"
            )
        return rows

    def recorder_kwargs(self) -> dict[str, Any]:
        h = self.heldout_batches
        rows = self.tracked_rows()
        pick = (lambda a: a) if rows is None else (lambda a: None if a is None else a[rows])  # noqa: E731
        return {
            "labels": pick(self.train_batches.labels),
            "ids": pick(self.train_batches.ids),
            "clean_labels": pick(self.clean_train_labels),
            "is_noisy": pick(self.is_noisy),
            # The whole training set's classes, recorded rows or not: the label prior the model was trained on.
            "class_counts": np.bincount(self.clean_train_labels, minlength=self.data.num_labels),
            "heldout_labels": h.labels if h is not None else None,
            "heldout_ids": h.ids if h is not None else None,
        }

    def save_extra(self, directory: Path) -> None:
        if self.is_noisy is not None:
            arrays = {
                "is_noisy": self.is_noisy,
                "clean_labels": self.clean_train_labels,
                "noisy_labels": self.train_batches.labels,
                "ids": self.train_batches.ids,
            }
            RunDirectory(directory).write_arrays(NOISE_NAME, arrays)
