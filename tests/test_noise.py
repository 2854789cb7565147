"""Label noise and response swapping: rates, reproducibility, and that every corruption is real."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kss_lora.errors import ConfigError, DataError
from kss_lora.noise import inject_label_noise, swap_responses

Z999 = 3.2905  # two-sided 99.9% normal quantile


def within_binomial(k: int, n: int, p: float) -> bool:
    """k successes out of n are consistent with rate p at the 99.9% level (normal approximation)."""
    return abs(k - n * p) <= Z999 * math.sqrt(n * p * (1 - p)) + 1


def test_symmetric_rate_within_binomial_bounds_and_flips_are_real():
    labels = np.arange(20_000) % 4
    res = inject_label_noise(labels, rate=0.2, seed=3)
    assert within_binomial(int(res.is_noisy.sum()), labels.size, 0.2)
    assert res.rate_realised == pytest.approx(res.is_noisy.mean())
    # flipped labels never equal the clean label, and is_noisy is exactly the changed set
    assert np.all(res.noisy_labels[res.is_noisy] != labels[res.is_noisy])
    assert np.array_equal(res.is_noisy, res.noisy_labels != labels)
    assert np.array_equal(res.clean_labels, labels)
    assert res.noisy_labels.min() >= 0 and res.noisy_labels.max() <= 3


def test_symmetric_flips_are_uniform_over_other_classes():
    labels = np.zeros(30_000, dtype=int)
    res = inject_label_noise(labels, rate=0.5, num_classes=4, seed=1)
    counts = np.bincount(res.noisy_labels[res.is_noisy], minlength=4)
    assert counts[0] == 0
    assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_symmetric_reproducible_by_seed_and_nested_across_rates():
    labels = np.arange(5_000) % 10
    a = inject_label_noise(labels, rate=0.3, seed=7)
    b = inject_label_noise(labels, rate=0.3, seed=7)
    c = inject_label_noise(labels, rate=0.3, seed=8)
    assert np.array_equal(a.noisy_labels, b.noisy_labels)
    assert not np.array_equal(a.is_noisy, c.is_noisy)
    low = inject_label_noise(labels, rate=0.1, seed=7)
    assert np.all(a.is_noisy[low.is_noisy])  # same seed: the 10% set is inside the 30% set


def test_zero_rate_changes_nothing_and_input_is_not_aliased():
    labels = np.array([0, 1, 2, 1])
    res = inject_label_noise(labels, rate=0.0, seed=0)
    assert not res.is_noisy.any() and res.rate_realised == 0.0
    labels[0] = 2
    assert res.clean_labels[0] == 0


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, None, "0.2"])
def test_bad_rate_is_config_error(rate):
    with pytest.raises(ConfigError, match="noise.rate"):
        inject_label_noise([0, 1, 2], rate=rate)


def test_bad_labels_and_options():
    with pytest.raises(DataError):
        inject_label_noise([0, -1, 2], rate=0.1)
    with pytest.raises(DataError):
        inject_label_noise([[0, 1]], rate=0.1)
    with pytest.raises(DataError):
        inject_label_noise([0.5, 1.0], rate=0.1)
    with pytest.raises(DataError):
        inject_label_noise([0, 5], rate=0.1, num_classes=3)
    with pytest.raises(ConfigError, match="noise.num_classes"):
        inject_label_noise([0, 0, 0], rate=0.1)
    with pytest.raises(ConfigError, match="noise.kind"):
        inject_label_noise([0, 1], rate=0.1, kind="pair")
    with pytest.raises(ConfigError, match="noise.kind"):
        inject_label_noise([0, 1], rate=0.1, kind="asymmetric")
    with pytest.raises(ConfigError, match="noise.seed"):
        inject_label_noise([0, 1], rate=0.1, seed=-1)


def test_transition_matrix_is_respected_on_a_large_sample():
    t = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    labels = np.arange(60_000) % 3
    res = inject_label_noise(labels, rate=None, kind="asymmetric", transition=t, seed=11)
    for i in range(3):
        rows = res.noisy_labels[labels == i]
        n = rows.size
        for j in range(3):
            k = int((rows == j).sum())
            if t[i, j] in (0.0, 1.0):
                assert k == n * t[i, j]
            else:
                assert within_binomial(k, n, t[i, j]), (i, j, k / n)
    assert np.array_equal(res.is_noisy, res.noisy_labels != labels)
    again = inject_label_noise(labels, rate=None, kind="asymmetric", transition=t, seed=11)
    assert np.array_equal(res.noisy_labels, again.noisy_labels)


def test_transition_validation():
    good = np.eye(3)
    with pytest.raises(ConfigError, match="rows must sum to 1"):
        inject_label_noise([0, 1, 2], rate=None, kind="asymmetric", transition=[[0.5, 0.4], [0, 1]])
    with pytest.raises(ConfigError, match="noise.transition"):
        inject_label_noise([0, 1, 2], rate=None, kind="asymmetric", transition=np.ones((2, 3)) / 3)
    with pytest.raises(ConfigError, match="noise.rate"):
        inject_label_noise([0, 1, 2], rate=0.2, kind="asymmetric", transition=good)
    with pytest.raises(DataError):
        inject_label_noise([0, 1, 3], rate=None, kind="asymmetric", transition=good)
    with pytest.raises(ConfigError, match="noise.kind"):
        inject_label_noise([0, 1, 2], rate=0.1, transition=good)


def test_pairs_are_respected():
    labels = np.arange(40_000) % 4
    res = inject_label_noise(labels, rate=0.4, kind="asymmetric", pairs={0: 1, 2: 0}, seed=5)
    assert np.array_equal(res.noisy_labels[labels == 1], labels[labels == 1])
    assert np.array_equal(res.noisy_labels[labels == 3], labels[labels == 3])
    assert set(np.unique(res.noisy_labels[labels == 0])) == {0, 1}
    assert set(np.unique(res.noisy_labels[labels == 2])) == {0, 2}
    for src in (0, 2):
        assert within_binomial(int(res.is_noisy[labels == src].sum()), 10_000, 0.4)
    assert res.rate_realised == pytest.approx(res.is_noisy.sum() / labels.size)  # over all examples
    with pytest.raises(ConfigError, match="noise.pairs"):
        inject_label_noise(labels, rate=0.4, kind="asymmetric", pairs={1: 1})
    with pytest.raises(ConfigError, match="noise.pairs"):
        inject_label_noise(labels, rate=0.4, kind="asymmetric", pairs={0: 7}, num_classes=4)


def test_swap_responses_changes_every_chosen_example():
    responses = [f"answer {i}" for i in range(200)]
    new, noisy = swap_responses(responses, rate=0.25, seed=2)
    assert noisy.sum() == 50
    assert all(new[i] != responses[i] for i in np.flatnonzero(noisy))
    assert all(new[i] == responses[i] for i in np.flatnonzero(~noisy))
    assert sorted(new) == sorted(responses)  # a permutation: no response invented or lost
    assert responses[0] == "answer 0"  # input untouched
    new2, noisy2 = swap_responses(responses, rate=0.25, seed=2)
    assert new2 == new and np.array_equal(noisy, noisy2)
    _, noisy3 = swap_responses(responses, rate=0.25, seed=3)
    assert not np.array_equal(noisy, noisy3)


def test_swap_responses_with_duplicates_and_edge_counts():
    responses = ["a"] * 40 + ["b"] * 30 + ["c"] * 30
    new, noisy = swap_responses(responses, rate=0.9, seed=0)
    assert noisy.sum() == 90  # largest group <= 40 <= 90 / 2: every chosen example can and does change
    assert sorted(new) == sorted(responses)
    skewed = ["yes"] * 90 + ["no"] * 10
    new, noisy = swap_responses(skewed, rate=0.5, seed=0)
    # every chosen "no" gets a "yes", and the same number of chosen "yes" get a "no": the optimum
    assert noisy[90:].sum() > 0 and noisy.sum() == 2 * noisy[90:].sum()
    assert sum(v != skewed[i] for i, v in enumerate(new)) == noisy.sum()
    unhashable = [{"t": i % 3} for i in range(30)]
    new, noisy = swap_responses(unhashable, rate=0.5, seed=1)
    assert noisy.sum() == 15 and all(new[i] != unhashable[i] for i in np.flatnonzero(noisy))
    same = ["x"] * 10
    new, noisy = swap_responses(same, rate=0.5, seed=0)
    assert not noisy.any() and new == same  # nothing can change, and nothing is claimed to
    _, noisy = swap_responses([str(i) for i in range(10)], rate=0.1, seed=0)
    assert noisy.sum() == 2  # one example cannot swap with itself
    new, noisy = swap_responses([], rate=0.5)
    assert new == [] and noisy.shape == (0,)
