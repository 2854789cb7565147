"""Spearman with bootstrap CI, partial Spearman, per-bucket deltas, hierarchical R^2."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kss_lora.dynamics import delta_by_bucket, hierarchical_r2, partial_spearman, spearman_with_ci
from kss_lora.errors import ConfigError, DataError


def manual_partial_spearman(x, y, z):
    """Reference: rank, residualise on [1, ranked z] with lstsq, Pearson of residuals, t with n-k-2 df."""
    n, k = len(x), z.shape[1]
    design = np.column_stack([np.ones(n)] + [stats.rankdata(z[:, j]) for j in range(k)])

    def resid(v):
        rv = stats.rankdata(v)
        beta, *_ = np.linalg.lstsq(design, rv, rcond=None)
        return rv - design @ beta

    r = stats.pearsonr(resid(x), resid(y)).statistic
    dof = n - k - 2
    t = r * math.sqrt(dof / (1 - r * r))
    return r, 2 * stats.t.sf(abs(t), dof)


@pytest.fixture
def confounded():
    rng = np.random.default_rng(0)
    n = 600
    z = rng.normal(size=(n, 2))
    x = z[:, 0] + 0.5 * z[:, 1] + rng.normal(size=n)
    y = np.exp(z[:, 0]) + 0.3 * x + rng.normal(size=n)
    return x, y, z


def test_partial_spearman_matches_manual_reference(confounded):
    x, y, z = confounded
    res = partial_spearman(x, y, z, n_boot=0)
    r_ref, p_ref = manual_partial_spearman(x, y, z)
    assert res.rho == pytest.approx(r_ref, abs=1e-10)
    assert res.p == pytest.approx(p_ref, rel=1e-8)
    assert (res.df, res.n, res.k) == (596, 600, 2)  # df = n - k - 2
    assert math.isnan(res.ci_low)  # n_boot=0: no CI


def test_partial_spearman_without_confounders_is_spearman(confounded):
    x, y, _ = confounded
    res = partial_spearman(x, y, np.empty((len(x), 0)), n_boot=0)
    ref = stats.spearmanr(x, y)
    assert res.rho == pytest.approx(ref.statistic, abs=1e-12)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-8)


def test_confounder_that_explains_everything_gives_near_zero():
    rng = np.random.default_rng(1)
    n = 2000
    z = rng.normal(size=n)
    x = z + rng.normal(size=n)
    y = z + rng.normal(size=n)
    assert stats.spearmanr(x, y).statistic > 0.4
    res = partial_spearman(x, y, z, n_boot=300, seed=0)
    assert abs(res.rho) < 0.06
    assert res.ci_low < 0 < res.ci_high


def test_partial_spearman_bootstrap_is_reproducible(confounded):
    x, y, z = confounded
    a = partial_spearman(x, y, z, n_boot=200, seed=4)
    b = partial_spearman(x, y, z, n_boot=200, seed=4)
    c = partial_spearman(x, y, z, n_boot=200, seed=5)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.rho < a.ci_high
    with pytest.raises(DataError):
        partial_spearman(x[:3], y[:3], z[:3])  # n - k - 2 = -1
    with pytest.raises(ConfigError, match="ci"):
        partial_spearman(x, y, z, n_boot=10, ci=95)


def test_spearman_with_ci(confounded):
    x, y, _ = confounded
    res = spearman_with_ci(x, y, n_boot=500, seed=0)
    ref = stats.spearmanr(x, y)
    assert res.rho == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)
    assert res.ci_low < res.rho < res.ci_high
    assert res.ci_high - res.ci_low < 0.2
    assert spearman_with_ci(x, y, n_boot=500, seed=0) == res
    mono = spearman_with_ci(np.arange(50.0), np.arange(50.0) ** 3, n_boot=100)
    assert (mono.rho, mono.ci_low, mono.ci_high) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(DataError):
        spearman_with_ci([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])


def test_delta_by_bucket_hand_values():
    df = delta_by_bucket([1.0, 2.0, 3.0, 10.0, 0.5], ["clean", "clean", "contested", "contested", "other"])
    assert list(df.index) == ["clean", "ambiguous", "contested", "other"]
    assert df.loc["clean", "mean"] == pytest.approx(1.5)
    assert df.loc["clean", "std"] == pytest.approx(math.sqrt(0.5))
    assert df.loc["contested", "mean"] == pytest.approx(6.5)
    assert df.loc["contested", "std"] == pytest.approx(math.sqrt(24.5))
    assert df.loc["contested", "sem"] == pytest.approx(math.sqrt(24.5) / math.sqrt(2))
    assert list(df["count"]) == [2, 0, 2, 1]
    assert math.isnan(df.loc["ambiguous", "mean"])


def test_hierarchical_r2():
    rng = np.random.default_rng(2)
    n = 400
    base = rng.normal(size=(n, 2))
    useful = rng.normal(size=n)
    junk = rng.normal(size=n)
    y = base @ np.array([1.0, -0.5]) + 0.7 * useful + rng.normal(size=n)
    strong = hierarchical_r2(y, base, useful)
    weak = hierarchical_r2(y, base, junk)
    assert strong.delta_r2 > 0.1 and strong.p_value < 1e-10
    assert 0 <= weak.delta_r2 < 0.01 and weak.p_value > 0.01
    assert strong.r2_full == pytest.approx(strong.r2_base + strong.delta_r2)
    assert (strong.df_num, strong.df_den) == (1, n - 3 - 1)
    # one predictor, empty base: R^2 = r^2 and the F-test p equals Pearson's p
    only = hierarchical_r2(y, np.empty((n, 0)), useful)
    ref = stats.pearsonr(useful, y)
    assert only.r2_base == 0.0
    assert only.r2_full == pytest.approx(ref.statistic**2)
    assert only.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    with pytest.raises(DataError):
        hierarchical_r2(np.ones(n), base, useful)
