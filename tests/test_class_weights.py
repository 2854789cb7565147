"""``train.class_weights: balanced``: the weights, the weighted batch loss by hand, validation, run ids."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_config

from kss_lora.config import from_dict
from kss_lora.errors import ConfigError
from kss_lora.tasks.classification import Batches, ClassificationTask, balanced_class_weights

# 3:1 imbalance: 30 examples of class 0, 10 of class 1.
LABELS = np.array([0] * 30 + [1] * 10)


def test_balanced_weights_are_inverse_frequency_with_mean_one():
    w = balanced_class_weights(LABELS, 2)
    # 1/30 and 1/10 divided by their mean 1/15.
    np.testing.assert_allclose(w, [0.5, 1.5])
    assert w.mean() == pytest.approx(1.0)
    # A class absent from the labels (e.g. none left after cleaning) weighs nothing; the others keep mean 1.
    np.testing.assert_allclose(balanced_class_weights(LABELS, 3), [0.5, 1.5, 0.0])


class _FixedLogits(torch.nn.Module):
    """A "model" returning given logits for the examples whose ids it is fed (input_ids[:, 0])."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = logits

    def forward(self, input_ids, attention_mask, **_):
        return SimpleNamespace(logits=self.table[input_ids[:, 0]])


def _losses(tmp_path, class_weights):
    cfg = from_dict(tiny_config(tmp_path, train={"class_weights": class_weights}))
    task = ClassificationTask(cfg)
    batches = Batches([[i] for i in range(LABELS.size)], None, LABELS.copy(), np.arange(LABELS.size))
    logits = torch.tensor(np.random.default_rng(0).normal(size=(LABELS.size, 2)), dtype=torch.float32)
    index = np.array([0, 1, 2, 35, 36])  # 3 of class 0, 2 of class 1
    losses, _ = task.train_losses(_FixedLogits(logits), batches, index, torch.device("cpu"), nullcontext)
    return losses, logits[index], LABELS[index]


def test_weighted_batch_loss_equals_hand_computation(tmp_path):
    losses, logits, y = _losses(tmp_path, "balanced")
    p = torch.softmax(logits.double(), dim=1).numpy()
    ce = -np.log(p[np.arange(y.size), y])
    w = np.where(y == 0, 0.5, 1.5)
    np.testing.assert_allclose(losses.detach().numpy(), w * ce, rtol=1e-5)
    # The runner's batch loss is the mean over the batch: sum(w_i * CE_i) / n.
    assert float(losses.mean()) == pytest.approx(float((w * ce).sum() / y.size), rel=1e-5)
    unweighted, _, _ = _losses(tmp_path, None)
    np.testing.assert_allclose(unweighted.detach().numpy(), ce, rtol=1e-5)


def test_class_weights_refused_for_causal_lm_and_unknown_values(tmp_path):
    with pytest.raises(ConfigError, match="train.class_weights.*classification only"):
        from_dict(tiny_config(tmp_path, model={"task": "causal-lm"}, train={"class_weights": "balanced"}))
    with pytest.raises(ConfigError, match="train.class_weights.*allowed: balanced"):
        from_dict(tiny_config(tmp_path, train={"class_weights": "inverse"}))


def test_default_leaves_run_ids_put_and_balanced_moves_them(tmp_path):
    base = from_dict(tiny_config(tmp_path))
    explicit_default = from_dict(tiny_config(tmp_path, train={"class_weights": None}))
    balanced = from_dict(tiny_config(tmp_path, train={"class_weights": "balanced"}))
    assert base.run_id() == explicit_default.run_id() != balanced.run_id()
