"""The verdict engine: its tests against scipy and hand examples, its false-positive rate under the null, its power."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kss_lora.lab import verdicts as V

N_SIM = 2000
# At most 5% plus three Monte-Carlo standard errors of a 5% rate over 2,000 simulations.
FPR_LIMIT = 0.05 + 3 * math.sqrt(0.05 * 0.95 / N_SIM)


def _holds_rate(a: np.ndarray, b: np.ndarray, *, direction: str = "less") -> float:
    """The share of simulated comparisons the engine calls ``holds`` (vectorised core, then :func:`judge` rules)."""
    w = V.welch_arrays(a, b, alternative=direction)
    # judge()'s own rule, vectorised: p < α in the claimed direction and the interval reaching "any effect".
    return float(np.mean(V.holds_rule(w["p"], w["ci_low"], w["ci_high"], direction=direction, target=0.0)))


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("noise", ["normal", "lognormal"])
def test_verdict_false_positive_rate(n: int, noise: str) -> None:
    rng = np.random.default_rng(1000 + n)
    draw = (lambda size: rng.normal(size=size)) if noise == "normal" else (lambda size: rng.lognormal(0, 1, size))
    a, b = draw((N_SIM, n)), draw((N_SIM, n))
    for direction in ("less", "greater"):
        rate = _holds_rate(a, b, direction=direction)
        assert rate <= FPR_LIMIT, (n, noise, direction, rate)


def test_verdict_false_positive_rate_through_compare() -> None:
    """The same null through the full per-claim path (compare → judge), fewer simulations to stay fast."""
    rng = np.random.default_rng(7)
    sims = 400
    holds = 0
    for _ in range(sims):
        a, b = rng.lognormal(0, 1, 5), rng.lognormal(0, 1, 5)
        c = V.compare(a, b, claim="x", metric="m", treatment_label="t", control_label="c", direction="less")
        holds += V.judge(c) == V.HOLDS
    assert holds / sims <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)


def test_verdict_false_positive_rate_family_holm() -> None:
    """A family of four null comparisons: 'every part holds' and 'some part holds' stay below α after Holm."""
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(4, N_SIM, 5)), rng.normal(size=(4, N_SIM, 5))
    p = np.stack([V.welch_arrays(a[k], b[k], alternative="less")["p"] for k in range(4)], axis=1)
    adjusted = np.array([V.holm(row) for row in p])
    any_holds = (adjusted < V.ALPHA).any(axis=1).mean()
    assert any_holds <= FPR_LIMIT


def test_verdict_power_two_sigma_at_n5() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (N_SIM, 5)), rng.normal(2, 1, (N_SIM, 5))
    assert _holds_rate(a, b, direction="less") >= 0.80


def test_welch_matches_scipy() -> None:
    a, b = np.array([1.0, 2.0, 4.0, 3.5]), np.array([3.0, 5.0, 4.5, 6.0, 5.5])
    w = V.welch_arrays(a, b, alternative="two-sided", level=0.95)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert float(w["p"]) == pytest.approx(ref.pvalue)
    assert float(w["df"]) == pytest.approx(ref.df)
    assert (float(w["ci_low"]), float(w["ci_high"])) == pytest.approx((ci.low, ci.high))
    one = V.welch_arrays(a, b, alternative="less")
    assert float(one["p"]) == pytest.approx(sps.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def test_holm_hand_example() -> None:
    # p sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 0.04, 0.06, 0.06 (monotone), 0.06 → max with previous.
    assert V.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert V.holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    assert V.holm([0.9, 0.4]) == pytest.approx([0.9, 0.8])  # 2 × 0.4, then max(0.8, 1 × 0.9)


def test_fieller_ratio_and_undefined_baseline() -> None:
    a, b = np.array([0.9, 1.1, 1.0, 1.05]), np.array([1.9, 2.1, 2.0, 2.05])
    point, lo, hi = V.fieller_ratio(a, b)
    assert point == pytest.approx(a.mean() / b.mean())
    assert lo < point < hi and hi - lo < 0.1
    # A baseline whose interval reaches 0: the ratio is undefined, not a number.
    _, lo, hi = V.fieller_ratio(a, np.array([-0.1, 0.2, 0.05]))
    assert math.isnan(lo) and math.isnan(hi)


def _cmp(t, c, **kw):
    return V.compare(t, c, claim="x", metric="gap", treatment_label="t", control_label="c", **kw)


def test_judge_ratio_wide_ci_does_not_hold_a_33x_claim() -> None:
    # A small, noisy reduction: the interval's lower end is far above 1/33, the claim is excluded.
    rng = np.random.default_rng(0)
    c = _cmp(rng.normal(0.9, 0.05, 5), rng.normal(1.0, 0.05, 5), direction="less", scale="ratio", claimed=0.03)
    assert V.judge(c) == V.DOES_NOT_HOLD
    # Very wide: the ratio interval is unbounded or reaches the claim, but the reduction is not significant.
    wide = _cmp([0.1, 1.9, 1.0], [1.0, 1.1, 0.9], direction="less", scale="ratio", claimed=0.03)
    assert V.judge(wide) in (V.INCONCLUSIVE, V.DOES_NOT_HOLD) and V.judge(wide) != V.HOLDS
    big = _cmp([0.02, 0.03, 0.025, 0.035], [1.0, 1.1, 0.9, 1.05], direction="less", scale="ratio", claimed=0.03)
    assert V.judge(big) == V.HOLDS


def test_judge_words_and_too_few_runs() -> None:
    assert V.judge(_cmp([1, 2], [5, 6, 7], direction="less")) == V.TOO_FEW_RUNS
    assert V.judge(_cmp([1.0, 2.0, 1.5], [5.0, 6.0, 7.0], direction="greater")) == V.DOES_NOT_HOLD
    assert V.judge(_cmp([1.0, 2.0, 1.5], [1.2, 1.8, 1.6], direction="less")) == V.INCONCLUSIVE
    assert V.judge(V.not_measured("x")) == V.NOT_MEASURED
    assert set(V.VERDICTS) == {
        "holds",
        "does not hold",
        "inconclusive",
        "too few runs",
        "not specific to KSS",
        "not measured",
    }


def test_combine_and_matched_gamma_rule() -> None:
    assert V.combine([V.HOLDS, V.HOLDS]) == V.HOLDS
    assert V.combine([V.HOLDS, V.DOES_NOT_HOLD]) == V.DOES_NOT_HOLD
    # Only one of four presets measured: not a verdict on "every preset".
    assert V.combine([V.HOLDS], expected=4) == V.INCONCLUSIVE
    assert V.combine([V.HOLDS, V.TOO_FEW_RUNS]) == V.TOO_FEW_RUNS
    assert V.matched_gamma(V.HOLDS, control_shows_effect=V.HOLDS, kss_beyond_control=V.INCONCLUSIVE) == V.NOT_SPECIFIC
    assert V.matched_gamma(V.HOLDS, control_shows_effect=V.HOLDS, kss_beyond_control=V.HOLDS) == V.HOLDS
    assert V.matched_gamma(V.INCONCLUSIVE, control_shows_effect=V.HOLDS, kss_beyond_control=V.HOLDS) == V.INCONCLUSIVE


def test_judge_family_applies_holm() -> None:
    rng = np.random.default_rng(5)
    parts = [_cmp(rng.normal(0, 1, 5), rng.normal(1.2, 1, 5), direction="less") for _ in range(4)]
    judged = V.judge_family(parts)
    assert [c.p_adjusted for c in judged] == pytest.approx(V.holm([c.p_value for c in parts]))
    assert all(c.verdict in V.VERDICTS for c in judged)


def test_judge_bound_non_inferiority() -> None:
    c = _cmp([1.0, 1.01, 0.99, 1.0], [1.0, 1.0, 1.01, 0.99], direction="less", scale="ratio")
    assert V.judge_bound(c, bound=1.05) == V.HOLDS
    assert V.judge_bound(c, bound=0.9) == V.DOES_NOT_HOLD
