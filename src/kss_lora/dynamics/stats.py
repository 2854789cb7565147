"""Correlation statistics for the entropy-vs-dynamics analysis (docs/spec.md §2, Steele's protocol).

Why these and not just ``scipy.stats.spearmanr``: a raw Spearman rho between annotation entropy and AULC
can be carried entirely by confounders (long or initially-hard items are both contested and slow). So we
report a bootstrap CI, a partial Spearman that residualises ranks on ranked confounders (t-test with
``n - k - 2`` degrees of freedom), and the incremental R^2 of entropy beyond difficulty proxies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from kss_lora.errors import ConfigError, DataError

__all__ = [
    "PRIOR_MARGIN",
    "HierarchicalR2",
    "PartialSpearman",
    "SpearmanCI",
    "delta_by_bucket",
    "hierarchical_r2",
    "partial_spearman",
    "beats_prior",
    "majority_rate",
    "spearman_with_ci",
]

PRIOR_MARGIN = 0.10
"""How far (accuracy, 0.10 = 10 points) a run must beat its split's majority-class rate to have learned more than
the label prior: the entropy study's gate and detection's run-health check."""


def majority_rate(labels: Any) -> float:
    """Share of the most frequent class (NaN for no labels)."""
    if labels is None:
        return float("nan")
    y = np.asarray(labels, dtype=np.int64)
    return float(np.bincount(y).max() / y.size) if y.size else float("nan")


def beats_prior(accuracy: float, rate: float, margin: float = PRIOR_MARGIN) -> bool:
    """Whether ``accuracy`` is at least ``margin`` above the majority-class ``rate``; unknown (NaN) is not."""
    above = accuracy - rate
    return bool(np.isfinite(above) and above >= margin - 1e-12)


_BOOT_CHUNK = 250


@dataclass(frozen=True)
class SpearmanCI:
    """Spearman rho with its two-sided p-value (scipy, t approximation) and a percentile bootstrap CI."""

    rho: float
    p: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class PartialSpearman:
    """Partial Spearman correlation; ``df = n - k - 2``; CI is a percentile bootstrap (NaN if n_boot = 0)."""

    rho: float
    p: float
    df: int
    n: int
    k: int
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class HierarchicalR2:
    """OLS R^2 of a base model, of base + added predictors, the increment, and its nested-model F-test."""

    r2_base: float
    r2_full: float
    delta_r2: float
    f_stat: float
    p_value: float
    df_num: int
    df_den: int


def _vec(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has NaN or inf; drop those examples first")
    return a


def _mat(name: str, z: Any, n: int) -> np.ndarray:
    a = np.asarray(z, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise DataError(f"{name} must be [n] or [n, k] with n = {n}, got shape {np.shape(z)}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} has NaN or inf; drop those examples first")
    return a


def _check_boot(n_boot: int, ci: float, seed: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError("n_boot", f"must be a non-negative integer, got {n_boot!r}")
    if not (0.0 < ci < 1.0):
        raise ConfigError("ci", f"must be in (0, 1), e.g. 0.95, got {ci!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed", f"must be a non-negative integer, got {seed!r}")


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of ``[B, n]`` arrays; NaN where a row is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / den
    return np.where(den > 1e-12, np.clip(r, -1.0, 1.0), np.nan)


def _residualise(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of ``v [B, n]`` on ``z [B, n, k]`` by OLS with intercept (via centring; pinv copes with
    bootstrap samples whose confounders are collinear)."""
    vc = v - v.mean(axis=-1, keepdims=True)
    if z.shape[-1] == 0:
        return vc
    zc = z - z.mean(axis=-2, keepdims=True)
    zt = np.swapaxes(zc, -1, -2)
    beta = np.linalg.pinv(zt @ zc) @ (zt @ vc[..., None])
    return vc - (zc @ beta)[..., 0]


def _partial_r(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Partial Spearman for batches: ``x, y [B, n]``, ``z [B, n, k]`` raw values -> ``[B]`` r."""
    rx = sps.rankdata(x, axis=-1)
    ry = sps.rankdata(y, axis=-1)
    rz = sps.rankdata(z, axis=-2) if z.shape[-1] else z
    return _rowwise_pearson(_residualise(rx, rz), _residualise(ry, rz))


def _bootstrap(stat, arrays: list[np.ndarray], n_boot: int, seed: int, ci: float) -> tuple[float, float]:
    """Percentile bootstrap over examples (rows resampled jointly); NaN resamples are skipped."""
    if n_boot == 0:
        return float("nan"), float("nan")
    n = arrays[0].shape[0]
    rng = np.random.default_rng(seed)
    vals = []
    for start in range(0, n_boot, _BOOT_CHUNK):
        idx = rng.integers(0, n, size=(min(_BOOT_CHUNK, n_boot - start), n))
        vals.append(stat(*[a[idx] for a in arrays]))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def spearman_with_ci(x: Any, y: Any, *, n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> SpearmanCI:
    """Spearman rho and p (as ``scipy.stats.spearmanr``) plus a percentile bootstrap CI of rho.

    Examples are resampled with replacement and re-ranked within each resample (so ties from duplicated
    rows get average ranks, as in the point estimate). Reproducible by ``seed``.
    """
    xa, ya = _vec("x", x), _vec("y", y)
    if xa.shape != ya.shape or xa.size < 3:
        raise DataError(f"x and y need the same length >= 3, got {xa.size} and {ya.size}")
    _check_boot(n_boot, ci, seed)
    res = sps.spearmanr(xa, ya)

    def stat(bx: np.ndarray, by: np.ndarray) -> np.ndarray:
        return _rowwise_pearson(sps.rankdata(bx, axis=-1), sps.rankdata(by, axis=-1))

    lo, hi = _bootstrap(stat, [xa, ya], n_boot, seed, ci)
    return SpearmanCI(rho=float(res.statistic), p=float(res.pvalue), ci_low=lo, ci_high=hi, n=int(xa.size))


def partial_spearman(
    x: Any, y: Any, confounders: Any, *, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> PartialSpearman:
    """Spearman correlation of x and y controlling for confounders.

    Method (Steele's protocol as docs/spec.md §2 states it): rank x, y and each confounder column (average
    ranks), regress the ranks of x and of y on the confounder ranks by OLS with an intercept, and take
    the Pearson r of the two residual vectors. Significance: ``t = r sqrt(df / (1 - r^2))`` with
    ``df = n - k - 2`` (k = number of confounders), two-sided. With no confounders this equals
    ``scipy.stats.spearmanr``.

    Args:
        x, y: ``[n]`` values (e.g. annotation entropy and AULC).
        confounders: ``[n]`` or ``[n, k]`` (e.g. text length, initial loss); ``[n, 0]`` is allowed.
        n_boot: bootstrap resamples for the CI (0 = skip; CI fields are NaN).
    """
    xa, ya = _vec("x", x), _vec("y", y)
    if xa.shape != ya.shape:
        raise DataError(f"x and y need the same length, got {xa.size} and {ya.size}")
    z = _mat("confounders", confounders, xa.size)
    n, k = xa.size, z.shape[1]
    dof = n - k - 2
    if dof < 1:
        raise DataError(f"partial Spearman needs n - k - 2 >= 1, got n = {n}, k = {k}")
    _check_boot(n_boot, ci, seed)
    r = float(_partial_r(xa[None], ya[None], z[None])[0])
    if np.isnan(r):
        p = float("nan")
    elif abs(r) >= 1.0:
        p = 0.0
    else:
        t = r * np.sqrt(dof / (1.0 - r * r))
        p = float(2.0 * sps.t.sf(abs(t), dof))
    lo, hi = _bootstrap(_partial_r, [xa, ya, z], n_boot, seed, ci)
    return PartialSpearman(rho=r, p=p, df=dof, n=n, k=k, ci_low=lo, ci_high=hi)


def delta_by_bucket(delta: Any, buckets: Any, *, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Mean, sample std (ddof=1), count and standard error of ``delta`` per bucket.

    Rows follow ``order`` (default: clean, ambiguous, contested first, then other labels sorted);
    buckets in ``order`` with no examples are kept with count 0, so tables line up across runs.
    """
    d = _vec("delta", delta)
    b = np.asarray(buckets, dtype=object)
    if b.shape != d.shape:
        raise DataError(f"buckets must have one label per delta, got {b.shape} vs {d.shape}")
    if order is None:
        known = ("clean", "ambiguous", "contested")
        order = known + tuple(sorted({str(v) for v in b} - set(known)))
    frame = pd.DataFrame({"bucket": b.astype(str), "delta": d})
    g = frame.groupby("bucket")["delta"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "count": g.count()}).reindex(list(order))
    out["count"] = out["count"].fillna(0).astype(np.int64)
    out["sem"] = out["std"] / np.sqrt(out["count"].where(out["count"] > 0))
    out.index.name = "bucket"
    return out


def _ols_r2(y: np.ndarray, x: np.ndarray) -> float:
    yc = y - y.mean()
    sst = float(yc @ yc)
    if x.shape[1] == 0:
        return 0.0
    design = np.column_stack([np.ones_like(y), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    return 1.0 - float(resid @ resid) / sst


def hierarchical_r2(y: Any, base_predictors: Any, added: Any) -> HierarchicalR2:
    """Incremental R^2 of ``added`` predictors beyond ``base_predictors`` (OLS with intercept), F-tested.

    ``F = (delta_r2 / q) / ((1 - r2_full) / (n - p - 1))`` with q added and p total predictors.
    Use it to ask whether entropy explains AULC beyond difficulty proxies (length, initial loss).
    Predictors are used as given: rank them first for a rank-based (Spearman-style) analysis.
    """
    ya = _vec("y", y)
    n = ya.size
    base = _mat("base_predictors", base_predictors, n)
    add = _mat("added", added, n)
    q = add.shape[1]
    p = base.shape[1] + q
    df_den = n - p - 1
    if q == 0:
        raise DataError("added must have at least one predictor column")
    if df_den < 1:
        raise DataError(f"need n - p - 1 >= 1 (n = {n}, p = {p} predictors)")
    if float(np.var(ya)) == 0.0:
        raise DataError("y is constant; R^2 is undefined")
    r2_base = _ols_r2(ya, base)
    r2_full = _ols_r2(ya, np.column_stack([base, add]))
    delta = r2_full - r2_base
    if r2_full >= 1.0:
        f_stat, p_value = float("inf"), 0.0
    else:
        f_stat = max(delta, 0.0) / q / ((1.0 - r2_full) / df_den)
        p_value = float(sps.f.sf(f_stat, q, df_den))
    return HierarchicalR2(
        r2_base=r2_base,
        r2_full=r2_full,
        delta_r2=delta,
        f_stat=float(f_stat),
        p_value=p_value,
        df_num=q,
        df_den=df_den,
    )
