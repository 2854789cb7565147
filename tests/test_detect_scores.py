"""Detector scores on synthetic trajectories: each recovers planted noise far above chance (F1 at k)."""

from __future__ import annotations

import numpy as np
import pytest

from kss_lora.detect import (
    aulc_scores,
    aum_scores,
    aum_threshold,
    cartography_scores,
    evaluate_detection,
    flag_top,
    forgetting_scores,
    hard_to_learn,
    rank_discrepancy_scores,
    self_confidence_scores,
    small_loss_scores,
)
from kss_lora.detect import scores as S
from kss_lora.errors import KSSError

N, K, T, RATE = 600, 4, 12, 0.2
CHANCE = RATE  # F1 at k of a random ranking equals the noise rate in expectation


def planted(seed: int = 0):
    """Trajectories of a model that learns clean labels early and memorises noisy ones late (Arpit et al.).

    Returns ``(is_noisy, margins[T, N], losses[T, N], probs[T, N], correct[T, N])`` with per-example
    difficulty spread so that clean and noisy overlap (no detector is perfect).
    """
    rng = np.random.default_rng(seed)
    noisy = rng.random(N) < RATE
    t = np.linspace(0, 1, T)[:, None]
    speed = rng.uniform(2, 8, N)  # clean: fast but varied
    onset = rng.uniform(0.55, 1.2, N)  # noisy: memorisation starts late (often after training ends)
    clean_margin = -0.5 + 4.0 * (1 - np.exp(-speed * t))
    noisy_margin = -1.5 + 5.0 * np.clip(t - onset, 0, None) / 0.5
    margins = np.where(noisy, noisy_margin, clean_margin) + rng.normal(0, 0.8, (T, N))
    # a margin-to-probability map for K classes with the other K-1 logits tied
    probs = 1.0 / (1.0 + (K - 1) * np.exp(-margins))
    losses = -np.log(probs)
    return noisy, margins, losses, probs, margins > 0


def f1_at_k(truth: np.ndarray, scores: np.ndarray) -> float:
    return evaluate_detection(truth, scores)["f1_at_k"]


@pytest.mark.parametrize(
    "name, score",
    [
        ("small-loss final", lambda m, lo, p, c: small_loss_scores(lo, reduce="final")),
        ("small-loss mean", lambda m, lo, p, c: small_loss_scores(lo, reduce="mean")),
        ("aulc", lambda m, lo, p, c: aulc_scores(lo)),
        ("aum", lambda m, lo, p, c: aum_scores(m)),
        ("cartography", lambda m, lo, p, c: cartography_scores(p, c)),
        ("forgetting", lambda m, lo, p, c: forgetting_scores(c)),
    ],
)
def test_trajectory_detectors_recover_planted_noise(name, score):
    noisy, margins, losses, probs, correct = planted()
    f1 = f1_at_k(noisy, score(margins, losses, probs, correct))
    assert f1 > max(0.6, 3 * CHANCE), f"{name}: F1@k {f1:.3f}"


def test_single_run_scores_read_step_zero_for_the_loss_area_only():
    _, _, losses, probs, correct = planted()
    out = S.single_run_scores(losses, probs, correct)
    assert list(out) == list(S.SINGLE_RUN)
    np.testing.assert_array_equal(out["small-loss"], losses[-1])
    np.testing.assert_array_equal(out["aulc"], aulc_scores(losses))  # from step 0 (SPEC's area)
    np.testing.assert_array_equal(out["cartography"], cartography_scores(probs[1:], correct[1:]))
    np.testing.assert_array_equal(out["forgetting"], forgetting_scores(correct[1:]))
    assert not np.array_equal(out["forgetting"], forgetting_scores(correct))  # step 0 would count as an event
    assert list(S.single_run_scores(losses, probs, correct, detectors=["aulc"])) == ["aulc"]
    with pytest.raises(KSSError, match="aum"):
        S.single_run_scores(losses, probs, correct, detectors=["aum"])


def test_rank_discrepancy_recovers_noise_the_high_rank_model_memorised():
    """SPEC's RACT reading: the low-rank model never fits flipped labels, the high-rank one does late."""
    rng = np.random.default_rng(1)
    noisy = rng.random(N) < RATE
    t = np.linspace(0, 1, T)[:, None]
    hard = rng.uniform(0, 1, N)  # clean difficulty, shared by both models
    clean_low = 1.4 * np.exp(-(4 - 2 * hard) * t) + 0.1 * hard
    clean_high = 1.4 * np.exp(-(5 - 2 * hard) * t) + 0.05 * hard
    noisy_low = np.full((T, N), 2.0)
    noisy_high = 2.0 - 1.8 * np.clip(t - rng.uniform(0.2, 0.6, N), 0, None) / 0.5
    low = np.where(noisy, noisy_low, clean_low) + rng.normal(0, 0.05, (T, N))
    high = np.where(noisy, noisy_high, clean_high) + rng.normal(0, 0.05, (T, N))
    for reduce in ("mean", "final"):
        d = rank_discrepancy_scores(low, high, reduce=reduce)
        assert f1_at_k(noisy, d) > 0.8, reduce


def test_rank_discrepancy_is_inverted_before_memorisation():
    """The caveat documented in docs/detection.md: a high-rank model that has *not* memorised is just a
    more confident classifier, so it has the higher loss on noisy labels and d ranks them last."""
    rng = np.random.default_rng(2)
    noisy = rng.random(N) < RATE
    base = rng.uniform(0.5, 2.0, N)
    conf_low, conf_high = 1.0, 2.0  # the high-rank model is sharper in both directions
    low = np.where(noisy, np.log1p(np.exp(conf_low * base)), np.log1p(np.exp(-conf_low * base)))
    high = np.where(noisy, np.log1p(np.exp(conf_high * base)), np.log1p(np.exp(-conf_high * base)))
    d = rank_discrepancy_scores(low, high)
    assert evaluate_detection(noisy, d)["auroc"] < 0.1
    assert evaluate_detection(noisy, low)["auroc"] > 0.9  # the low-rank loss alone is fine


def test_aum_threshold_samples_set_the_cut():
    rng = np.random.default_rng(3)
    noisy = rng.random(N) < RATE
    aum = np.where(noisy, rng.normal(-1.5, 0.7, N), rng.normal(2.0, 0.7, N))
    fake = rng.normal(-1.5, 0.7, N // (K + 1))  # threshold samples behave like mislabelled examples
    scores = aum_scores(aum[None, :])
    cut = aum_threshold(aum_scores(fake[None, :]), percentile=99)
    assert cut == pytest.approx(-np.percentile(fake, 99))
    flags = scores >= cut
    out = evaluate_detection(noisy, scores, flags)
    assert out["f1_flags"] > 0.8 and out["recall_flags"] > 0.9


def test_self_confidence_from_out_of_sample_probs():
    rng = np.random.default_rng(4)
    clean = rng.integers(0, K, N)
    noisy = rng.random(N) < RATE
    given = np.where(noisy, (clean + rng.integers(1, K, N)) % K, clean)
    logits = rng.normal(0, 1, (N, K))
    logits[np.arange(N), clean] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = self_confidence_scores(given, probs)
    assert np.allclose(s, 1 - probs[np.arange(N), given])
    assert f1_at_k(noisy, s) > 0.7


def test_forgetting_orders_never_learned_first_then_counts():
    # one row per example here (transposed below to [T, N]): never forgotten, forgotten once at the end,
    # forgotten once in the middle, never learned
    correct = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool).T
    s = forgetting_scores(correct)
    assert s[3] > max(s[:3])  # never learned first
    assert s[1] > s[0] and s[2] > s[0]  # a forgetting event beats none
    assert np.all(np.isfinite(s))


def test_hard_to_learn_region():
    probs = np.array([[0.1, 0.9, 0.2, 0.4], [0.1, 0.95, 0.9, 0.4], [0.15, 0.9, 0.1, 0.45]])
    flags = hard_to_learn(probs, probs > 0.5, confidence=0.5, variability=0.1)
    assert flags.tolist() == [True, False, False, True]


def test_flag_top():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2])
    assert flag_top(s, count=2).tolist() == [False, True, False, True, False]
    assert flag_top(s, fraction=0.4).sum() == 2 and flag_top(s, count=0).sum() == 0
    assert flag_top(s, count=99).all()
    with pytest.raises(KSSError, match="exactly one"):
        flag_top(s)
    with pytest.raises(KSSError, match="fraction"):
        flag_top(s, fraction=1.5)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(KSSError, match="NaN"):
        aulc_scores(np.array([[0.1, np.nan]]))
    with pytest.raises(KSSError, match="different examples"):
        rank_discrepancy_scores(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(KSSError, match="reduce"):
        small_loss_scores(np.ones((2, 3)), reduce="median")
    with pytest.raises(KSSError, match="pred_probs"):
        self_confidence_scores(np.array([0, 1]), np.ones((3, 2)))
