"""Statistics over seeds against scipy and hand-computed numbers; aggregation of a runs table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kss_lora.lab.stats import (
    aggregate,
    bootstrap_ci,
    bootstrap_fn_ci,
    mannwhitney_p,
    ranges_overlap,
    to_markdown,
    welch_p,
)

A = [0.51, 0.55, 0.48, 0.60, 0.53]
B = [0.02, 0.05, 0.01, 0.03, 0.04]


def test_welch_matches_scipy_and_the_formula():
    a, b = np.array(A), np.array([0.40, 0.47, 0.52, 0.44, 0.58])
    assert welch_p(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    # by hand: Welch–Satterthwaite degrees of freedom
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    assert welch_p(a, b) == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-10)
    assert math.isnan(welch_p([1.0], b)) and math.isnan(welch_p([1, 1, 1], [2, 2, 2]))


def test_mann_whitney_exact_for_separated_groups():
    # 5 vs 5 with no overlap: the exact two-sided p is 2 / C(10, 5) = 2/252
    assert mannwhitney_p(A, B) == pytest.approx(2 / 252, rel=1e-12)
    a, b = [1.0, 3.0, 5.0, 7.0], [2.0, 4.0, 6.0, 8.0, 9.0]
    assert mannwhitney_p(a, b) == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert math.isnan(mannwhitney_p([], b))


def test_bootstrap_ci_is_deterministic_and_agrees_with_scipy():
    lo, hi = bootstrap_ci(A, B, seed=7)
    assert (lo, hi) == bootstrap_ci(A, B, seed=7)
    assert (lo, hi) != bootstrap_ci(A, B, seed=8)
    diff = np.mean(A) - np.mean(B)
    assert lo < diff < hi
    ref = sps.bootstrap(
        (np.array(A), np.array(B)),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=False,
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.004) and hi == pytest.approx(ref.high, abs=0.004)
    # ratio form and the general form agree
    r = bootstrap_ci(B, A, statistic="ratio", seed=1)
    assert r == bootstrap_fn_ci([B, A], lambda m: m[0] / m[1], seed=1)
    assert r[0] < np.mean(B) / np.mean(A) < r[1]
    assert all(math.isnan(x) for x in bootstrap_ci([], B))
    with pytest.raises(ValueError):
        bootstrap_ci(A, B, statistic="median")


def test_range_overlap():
    assert ranges_overlap(A, B) is False
    assert ranges_overlap([0.1, 0.5], [0.4, 0.9]) is True
    assert ranges_overlap([0.1, 0.4], [0.4, 0.9]) is True  # touching counts as overlap
    assert ranges_overlap([], B) is None


def runs_table() -> pd.DataFrame:
    rows = []
    for arm, preset, gamma, rho, gaps, vals in (
        ("standard", "standard", 0.5, 0.0, A, [1.90, 1.95, 2.0, 1.98, 2.02]),
        ("kss-default", "kss-default", 1.0, 0.1, B, [1.50, 1.52, 1.49, 1.51, 1.50]),
    ):
        for seed, (g, v) in enumerate(zip(gaps, vals)):
            rows.append(
                {
                    "name": f"{arm}-{seed}",
                    "arm": arm,
                    "stratum": "",
                    "condition": arm,
                    "status": "ok",
                    "method": "kss",
                    "preset": preset,
                    "gamma": gamma,
                    "sparsity": rho,
                    "rank": 8,
                    "seed": seed,
                    "noise_rate": 0.0,
                    "precision": "fp32",
                    "lr": 1e-3,
                    "train_loss": v - g,
                    "train_loss_clean": v - g,
                    "val_loss": v,
                    "gap": g,
                    "gap_clean": g,
                    "val_accuracy": 0.8,
                    "test_accuracy": 0.8,
                }
            )
    rows.append({**rows[0], "name": "broken", "status": "failed", "gap": 99.0})
    return pd.DataFrame(rows)


def test_aggregate_one_row_per_condition_vs_baseline():
    table = aggregate(runs_table(), baseline="standard")
    assert list(table["condition"]) == ["standard", "kss-default"]
    base, kss = table.iloc[0], table.iloc[1]
    assert base["n"] == 5  # the failed run does not count
    assert base["gap_mean"] == pytest.approx(np.mean(A)) and base["gap_std"] == pytest.approx(np.std(A, ddof=1))
    assert kss["kappa_abs"] == pytest.approx(np.mean(B))
    assert kss["kappa_rel"] == pytest.approx(np.mean(B) / np.mean(A))
    assert kss["quality_cost"] == pytest.approx((1.504 - 1.97) / 1.97)
    assert kss["gap_welch_p"] == pytest.approx(welch_p(B, A))
    assert kss["gap_mwu_p"] == pytest.approx(2 / 252)
    assert kss["gap_ci_lo"] < kss["gap_diff"] < kss["gap_ci_hi"] < 0
    assert not kss["gap_overlap"]
    md = to_markdown(table)
    assert md.splitlines()[0].startswith("| condition | n | train loss | val loss | gap |")
    assert "kss-default" in md and "0.0079" in md  # MWU p = 2/252
