"""Per-example dynamics metrics against hand-computed small examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import log_softmax

from kss_lora.dynamics import (
    aulc,
    aum,
    cartography,
    example_table,
    forgetting_events,
    learning_time,
    margin_from_logits,
    per_example_from_logits,
    unlearning,
)
from kss_lora.errors import ConfigError, DataError

# 3 checkpoints x 3 examples
LOSSES = np.array(
    [
        [2.0, 0.5, 1.0],
        [1.0, 0.3, 2.0],
        [0.6, 0.1, 3.0],
    ]
)


def test_aulc_and_unlearning():
    np.testing.assert_allclose(aulc(LOSSES), [1.2, 0.3, 2.0])  # (2+1+.6)/3, (.5+.3+.1)/3, (1+2+3)/3
    np.testing.assert_allclose(unlearning(LOSSES), [-1.4, -0.4, 2.0])  # final - initial


def test_learning_time():
    np.testing.assert_array_equal(learning_time(LOSSES, threshold=math.log(2)), [2, 0, -1])
    np.testing.assert_array_equal(learning_time(LOSSES, threshold=1.5), [1, 0, 0])
    # example 2 dips below 1.5 at t=0 and then climbs: never learned for good
    np.testing.assert_array_equal(learning_time(LOSSES, threshold=1.5, persistent=True), [1, 0, -1])
    np.testing.assert_array_equal(learning_time(LOSSES, threshold=0.5), [-1, 1, -1])  # strict <
    with pytest.raises(ConfigError, match="threshold"):
        learning_time(LOSSES, threshold=float("nan"))


def test_cartography():
    probs = np.array([[0.2, 0.9], [0.4, 0.9], [0.6, 0.8], [0.8, 0.8]])
    correct = np.array([[0, 1], [0, 1], [1, 1], [1, 0]])
    c = cartography(probs, correct)
    np.testing.assert_allclose(c.confidence, [0.5, 0.85])
    # population std: sqrt((.09+.01+.01+.09)/4) = sqrt(.05); sqrt(4 * .05^2 / 4) = .05
    np.testing.assert_allclose(c.variability, [0.22360679774997896, 0.05])
    np.testing.assert_allclose(c.correctness, [0.5, 0.75])
    with pytest.raises(DataError):
        cartography(probs * 2, correct)
    with pytest.raises(DataError):
        cartography(probs, correct[:3])


def test_forgetting_events():
    correct = np.array(
        [
            [1, 0, 0, 1],
            [0, 0, 1, 1],
            [1, 0, 1, 1],
            [0, 0, 1, 1],
            [1, 0, 1, 0],
        ],
        dtype=bool,
    )
    f = forgetting_events(correct)
    np.testing.assert_array_equal(f.counts, [2, 0, 0, 1])
    np.testing.assert_array_equal(f.never_learned, [False, True, False, False])
    with pytest.raises(DataError):
        forgetting_events(np.array([[0, 2]]))


def test_aum_and_margins():
    np.testing.assert_allclose(aum([[1, -2], [3, -1], [2, 0]]), [2.0, -1.0])
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0]])
    labels = np.array([0, 2, 0])
    np.testing.assert_allclose(margin_from_logits(logits, labels), [1.0, -2.0, 0.0])


def test_per_example_from_logits_hand_values_and_reference():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 0.0]])
    labels = np.array([0, 2, 0])
    out = per_example_from_logits(logits, labels)
    # loss_0 = ln(e^2 + e + 1) - 2; loss_1 = ln(1 + e^3 + e) - 1
    np.testing.assert_allclose(out.loss[:2], [0.40760596444438013, 2.1698460195562856])
    np.testing.assert_allclose(out.prob[:2], [0.665240955774822, 0.11419519938459448])
    np.testing.assert_array_equal(out.correct, [True, False, False])  # a tie is not correct
    ref = -log_softmax(logits, axis=1)[np.arange(3), labels]
    np.testing.assert_allclose(out.loss, ref)
    # stable for huge logits; [T, N, K] stacks broadcast the labels
    big = per_example_from_logits(np.array([[1000.0, 0.0]]), np.array([1]))
    assert big.loss[0] == pytest.approx(1000.0)
    stacked = per_example_from_logits(np.stack([logits, 2 * logits]), labels)
    assert stacked.loss.shape == (2, 3)
    np.testing.assert_allclose(stacked.margin[1], 2 * margin_from_logits(logits, labels))
    with pytest.raises(DataError):
        per_example_from_logits(logits, np.array([0, 3, 0]))
    with pytest.raises(DataError):
        per_example_from_logits(logits, np.array([0.0, 1.0, 0.0]))


def test_example_table():
    probs = np.exp(-LOSSES)
    correct = probs > 0.5
    margins = np.log(probs / (1 - probs))
    df = example_table(LOSSES, probs, margins, correct, index=["a", "b", "c"])
    assert list(df.index) == ["a", "b", "c"]
    np.testing.assert_allclose(df["aulc"], [1.2, 0.3, 2.0])
    np.testing.assert_array_equal(df["learning_time"], [2, 0, -1])
    np.testing.assert_allclose(df["unlearning"], [-1.4, -0.4, 2.0])
    np.testing.assert_allclose(df["confidence"], probs.mean(axis=0))
    np.testing.assert_array_equal(df["forgetting_events"], [0, 0, 0])
    np.testing.assert_array_equal(df["never_learned"], [False, False, True])
    np.testing.assert_allclose(df["aum"], margins.mean(axis=0))
    only_losses = example_table(LOSSES)
    assert "aum" not in only_losses and "confidence" not in only_losses
    with pytest.raises(DataError):
        example_table(LOSSES, probs[:2], margins, correct)
    with pytest.raises(DataError):
        example_table(np.array([[1.0, np.nan]]))
    with pytest.raises(DataError):
        aulc(np.ones(3))
