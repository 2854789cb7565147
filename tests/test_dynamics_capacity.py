"""LoRA capacity bound and clean-vs-noisy temporal separation."""

from __future__ import annotations

import numpy as np
import pytest

from kss_lora.dynamics import lora_capacity, lora_target_shapes, model_lora_capacity, temporal_separation
from kss_lora.errors import ConfigError, DataError


def test_lora_capacity_known_shapes():
    assert lora_capacity((768, 768), 8) == 8 * (768 + 768 - 8) == 12224
    assert lora_capacity([(4096, 4096), (4096, 1024)], 16) == 130816 + 81664
    assert lora_capacity([(3, 5)], 10) == 15  # rank clipped to 3: the full 3x5 matrix
    assert lora_capacity([(3, 5)], 3) == lora_capacity([(3, 5)], 99)
    assert lora_capacity([], 4) == 0
    with pytest.raises(ConfigError, match="lora.rank"):
        lora_capacity([(4, 4)], 0)
    with pytest.raises(DataError):
        lora_capacity([(4, 0)], 2)


def test_model_lora_capacity_walks_matching_linears():
    nn = pytest.importorskip("torch.nn")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(16, 16)
            self.v = nn.Linear(16, 8)  # weight is [out=8, in=16]
            self.proj_q = nn.Linear(16, 4)  # must not match target "q"

    model = nn.Sequential(Block(), Block())
    shapes = lora_target_shapes(model, target_modules=["q", "v"])
    assert shapes == {"0.q": (16, 16), "0.v": (8, 16), "1.q": (16, 16), "1.v": (8, 16)}
    r = 4
    assert model_lora_capacity(model, rank=r, target_modules=["q", "v"]) == 2 * (r * (32 - r) + r * (24 - r))
    with pytest.raises(ConfigError, match="lora.target_modules"):
        model_lora_capacity(model, rank=4, target_modules=["k_proj"])
    with pytest.raises(ConfigError, match="lora.target_modules"):
        model_lora_capacity(model, rank=4, target_modules="q")


def test_temporal_separation_hand_example():
    is_noisy = np.array([False, False, True, True])
    correct = np.array(
        [
            [0, 0, 0, 0],  # clean 0,   noisy 0
            [1, 1, 0, 0],  # clean 1,   noisy 0    -> clean learned first
            [1, 1, 1, 0],  # clean 1,   noisy 0.5  -> noisy grows more: crossover
            [1, 1, 1, 1],  # clean 1,   noisy 1
        ]
    )
    ts = temporal_separation(correct, is_noisy)
    np.testing.assert_allclose(ts.clean_fitted, [0, 1, 1, 1])
    np.testing.assert_allclose(ts.noisy_fitted, [0, 0, 0.5, 1])
    np.testing.assert_allclose(ts.gap, [0, 1, 0.5, 0])
    assert ts.best_checkpoint == 1
    assert ts.crossover == 2
    assert temporal_separation(correct, is_noisy, tol=0.6).crossover == -1


def test_temporal_separation_never_memorises_and_errors():
    is_noisy = np.array([False, True])
    correct = np.array([[0, 0], [1, 0], [1, 0]])
    assert temporal_separation(correct, is_noisy).crossover == -1
    with pytest.raises(DataError):
        temporal_separation(correct, np.array([False, False]))
    with pytest.raises(DataError):
        temporal_separation(correct, np.array([False, True, True]))


def test_lora_target_shapes_takes_pefts_string_forms():
    """``all-linear`` and a regex name the same modules PEFT adapts (a string must not be read as letters)."""
    from transformers import BertConfig, BertForSequenceClassification

    from kss_lora.dynamics.capacity import lora_target_shapes

    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    model = BertForSequenceClassification(cfg)
    every = lora_target_shapes(model, target_modules="all-linear")
    assert "classifier" not in every and "bert.pooler.dense" in every
    assert len(every) == 2 * 6 + 1  # q, k, v, attention output, intermediate, output per layer; the pooler
    picked = lora_target_shapes(model, target_modules=r".*\.(query|value)$")
    assert sorted(picked) == [f"bert.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    assert picked["bert.encoder.layer.0.attention.self.query"] == (16, 16)
