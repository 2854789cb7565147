"""Statistics over seeds (docs/spec.md §2): mean ± std, Welch t, Mann-Whitney U, bootstrap CI, range overlap.

The two-sample helpers are plain functions on arrays so they can be checked against scipy on fixed numbers;
:func:`aggregate` turns a runs table into one tidy row per condition, comparing each condition with the
baseline arm *in the same stratum* (e.g. KSS at 20% noise vs the baseline at 20% noise).

With 3–5 seeds per condition a percentile bootstrap is too narrow (it covers its nominal 95% about 87% of the
time at n = 5), so the interval of a difference here is Welch's t interval (from :mod:`.verdicts`), Holm-adjusted
p-values are given across the arms of a stratum, and the bootstrap is kept only as a helper.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import ConfigError
from ..tables import fmt_mean_std, fmt_num, fmt_p, fmt_pct
from ..tables import markdown_table as _markdown_table
from .verdicts import holm, welch_arrays

METRICS = (
    "train_loss",
    "train_loss_clean",
    "val_loss",
    "gap",
    "gap_clean",
    "val_accuracy",
    "test_accuracy",
    "test_loss",
)
LEVEL = 0.95  # descriptive intervals (per-arm means, differences in the conditions table)
N_BOOT = 10_000


def _clean(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[np.isfinite(a)]


def welch_p(a: Any, b: Any) -> float:
    """Two-sided Welch t-test p-value; NaN when either group has < 2 values or both have no spread."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return float("nan")
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def mannwhitney_p(a: Any, b: Any) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples without ties); NaN for an empty group."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def bootstrap_ci(
    a: Any, b: Any, *, statistic: str = "diff", level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(a) - mean(b)`` (``diff``) or ``mean(a) / mean(b)`` (``ratio``).

    The groups are resampled independently (different seeds are different runs, not pairs). Deterministic
    for a given ``seed``. NaN when a group is empty.
    """
    if statistic not in ("diff", "ratio"):
        raise ValueError(f"statistic must be 'diff' or 'ratio', got {statistic!r}")
    fn = (lambda m: m[0] - m[1]) if statistic == "diff" else (lambda m: m[0] / m[1])
    return bootstrap_fn_ci([a, b], fn, level=level, n_boot=n_boot, seed=seed)


def bootstrap_fn_ci(
    groups: list[Any], fn: Any, *, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``fn([mean of group 0, mean of group 1, ...])``, groups resampled independently.

    The general form behind ratios (κ_rel) and differences of ratios (does κ_rel fall with noise?).
    Resamples where ``fn`` is not finite (a zero denominator) are dropped.
    """
    arrays = [_clean(g) for g in groups]
    if any(len(a) == 0 for a in arrays):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = [a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1) for a in arrays]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(fn(means), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def ranges_overlap(a: Any, b: Any) -> bool | None:
    """Whether [min a, max a] and [min b, max b] intersect (the published "zero overlap" claim is ``False``)."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return None
    return bool(a.min() <= b.max() and b.min() <= a.max())


def mean_ci(x: Any, *, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and its t interval; NaN ends for fewer than 2 values."""
    a = _clean(x)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(a) < 2:
        return float(a.mean()), float("nan"), float("nan")
    half = float(sps.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return float(a.mean()), float(a.mean()) - half, float(a.mean()) + half


def compare(a: Any, b: Any, *, seed: int = 0) -> dict[str, Any]:
    """Everything the report says about group ``a`` vs group ``b`` on one metric (Welch's t interval, two-sided).

    ``seed`` is kept for callers of the bootstrap version; the interval no longer depends on it.
    """
    a, b = _clean(a), _clean(b)
    w = welch_arrays(a, b, level=LEVEL) if len(a) and len(b) else None
    lo, hi = (float(w["ci_low"]), float(w["ci_high"])) if w else (float("nan"), float("nan"))
    return {
        "diff": float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"),
        "ci_lo": lo,
        "ci_hi": hi,
        "welch_p": welch_p(a, b),
        "mwu_p": mannwhitney_p(a, b),
        "overlap": ranges_overlap(a, b),
    }


def _ratio(x: float, y: float) -> float:
    return x / y if y not in (0.0,) and math.isfinite(y) and math.isfinite(x) else float("nan")


def check_baseline(runs: pd.DataFrame, baseline: str | None) -> None:
    """A named baseline must be an arm of ``runs`` (any status): else a one-line :class:`ConfigError` listing
    the arms, instead of a table whose comparisons are all empty."""
    if baseline is None or not len(runs) or "arm" not in runs:
        return
    arms = sorted({str(a) for a in runs["arm"].dropna()})
    if baseline not in arms:
        raise ConfigError("--baseline", f"no arm named {baseline!r} in these runs; arms: {', '.join(arms)}")


def aggregate(
    runs: pd.DataFrame, *, baseline: str | None = None, seed: int = 0, strict_baseline: bool = True
) -> pd.DataFrame:
    """One row per condition (arm × stratum): n, mean/std of each metric, and comparisons with the baseline.

    Columns per metric ``m``: ``m_mean``, ``m_std``. Versus the baseline arm of the same stratum:
    ``kappa_abs`` (= mean gap), ``kappa_rel`` (gap / baseline gap), ``kappa_rel_clean`` (same on gap_clean),
    ``quality_cost`` ((val − val_base) / val_base), and for ``gap``, ``gap_clean`` and ``val_loss``: difference,
    Welch 95% interval, Welch p (and Holm-adjusted over the stratum's arms), Mann-Whitney p, range overlap.
    κ_rel is NaN where the baseline gap's 95% interval reaches 0. Only finished (``ok``) runs count.
    ``strict_baseline``: a ``baseline`` that names no arm is an error (see :func:`check_baseline`); off for a
    baseline a sweep declared, whose runs may not exist yet.
    """
    if strict_baseline:
        check_baseline(runs, baseline)
    ok = runs[runs["status"] == "ok"] if len(runs) else runs
    if baseline is None and "standard" in set(ok.get("arm", [])):
        baseline = "standard"
    rows = []
    for (stratum, arm), group in ok.groupby(["stratum", "arm"], sort=False, dropna=False):
        row: dict[str, Any] = {
            "condition": group["condition"].iloc[0],
            "arm": arm,
            "stratum": stratum,
            "n": len(group),
            "baseline": baseline,
            "is_baseline": arm == baseline,
        }
        for col in ("method", "preset", "gamma", "sparsity", "rank", "noise_rate", "precision", "lr"):
            values = group[col].dropna().unique()
            row[col] = values[0] if len(values) == 1 else None
        for m in METRICS:
            v = _clean(group[m]) if m in group else np.array([])
            row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row["kappa_abs"] = row["gap_mean"]
        base = ok[(ok["arm"] == baseline) & (ok["stratum"] == stratum)] if baseline is not None else ok.iloc[0:0]
        if len(base):
            for g, kappa in (("gap", "kappa_rel"), ("gap_clean", "kappa_rel_clean")):
                mean, lo, _ = mean_ci(base[g])
                row[f"baseline_{g}_mean"], row[f"baseline_{g}_ci_lo"] = mean, lo
                # κ_rel is a ratio to the baseline gap: undefined unless that gap is clearly above 0.
                row[kappa] = _ratio(row[f"{g}_mean"], mean) if lo > 0 else float("nan")
            base_val = float(_clean(base["val_loss"]).mean())
            row["quality_cost"] = _ratio(row["val_loss_mean"] - base_val, base_val)
            for m in ("gap", "gap_clean", "val_loss"):
                for k, v in compare(group[m], base[m], seed=seed).items():
                    row[f"{m}_{k}"] = v
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Every arm against the baseline of its stratum is one family: Holm-adjust its Welch p-values.
    for m in ("gap", "gap_clean", "val_loss"):
        col = f"{m}_welch_p"
        if col not in table:
            continue
        table[f"{m}_welch_p_holm"] = float("nan")
        for _, idx in table[~table["is_baseline"]].groupby("stratum", dropna=False).groups.items():
            table.loc[idx, f"{m}_welch_p_holm"] = holm(table.loc[idx, col].tolist())
    # Strata by noise rate, then by the numbers in their label (rank 4 before rank 16); baseline first in each.
    table["_n"] = table["noise_rate"].astype(float).fillna(0.0)
    table["_k"] = [_natural(str(s)) for s in table["stratum"]]
    table = table.sort_values(["_n", "_k", "is_baseline"], ascending=[True, True, False], kind="stable")
    table = table.drop(columns=["_n", "_k"])
    return table.reset_index(drop=True)


def _natural(text: str) -> tuple:
    """Sort key that orders numbers inside labels by value: "r=4" < "r=16"."""
    import re

    return tuple(float(t) if t.replace(".", "", 1).isdigit() else t for t in re.findall(r"\d+\.?\d*|\D+", text))


def summary_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The main columns of :func:`aggregate`, formatted for humans (Markdown and HTML share them)."""
    out = []
    for _, r in table.iterrows():
        # Under label noise the comparison is on gap_clean: the noisy-label gap shrinks for everyone.
        m = "gap_clean" if isinstance(r.get("noise_rate"), float) and r["noise_rate"] > 0 else "gap"
        has_base = f"{m}_diff" in r and isinstance(r.get(f"{m}_diff"), float) and math.isfinite(r[f"{m}_diff"])
        ci = f"[{r[f'{m}_ci_lo']:+.4f}, {r[f'{m}_ci_hi']:+.4f}]" if has_base and not r["is_baseline"] else "–"
        overlap = "–" if not has_base or r["is_baseline"] else ("yes" if r[f"{m}_overlap"] else "no")
        out.append(
            {
                "condition": str(r["condition"]),
                "n": str(r["n"]),
                "train loss": fmt_mean_std(r["train_loss_mean"], r["train_loss_std"]),
                "val loss": fmt_mean_std(r["val_loss_mean"], r["val_loss_std"]),
                "gap": fmt_mean_std(r["gap_mean"], r["gap_std"]),
                "gap_clean": fmt_mean_std(r["gap_clean_mean"], r["gap_clean_std"]),
                "val acc": fmt_mean_std(r["val_accuracy_mean"], r["val_accuracy_std"], 3),
                "κ_rel": _kappa(r, "kappa_rel", "baseline_gap_mean"),
                "κ_rel clean": _kappa(r, "kappa_rel_clean", "baseline_gap_clean_mean"),
                "quality cost": "–" if r["is_baseline"] else fmt_pct(r.get("quality_cost")),
                "gap diff 95% CI": ci + (" (clean)" if m == "gap_clean" and ci != "–" else ""),
                "Welch p": "–" if r["is_baseline"] else fmt_p(r.get(f"{m}_welch_p")),
                "Holm p": "–" if r["is_baseline"] else fmt_p(r.get(f"{m}_welch_p_holm")),
                "MWU p": "–" if r["is_baseline"] else fmt_p(r.get(f"{m}_mwu_p")),
                "ranges overlap": overlap,
            }
        )
    return out


def _kappa(r: Any, col: str, base_col: str) -> str:
    """κ_rel is a ratio to the baseline gap: undefined when that gap's interval reaches 0 (e.g. under noise)."""
    if r["is_baseline"]:
        return "–"
    lo = r.get(base_col.replace("_mean", "_ci_lo"))
    if not (isinstance(lo, float) and math.isfinite(lo) and lo > 0):
        return "undefined"
    return fmt_num(r.get(col), 3)


def markdown_table(rows: list[dict[str, str]]) -> str:
    """The package's one Markdown writer, with this module's empty-table wording."""
    return _markdown_table(rows, empty="_no finished runs_")


def to_markdown(table: pd.DataFrame) -> str:
    """The aggregate table's main columns as Markdown (p-values and CI: gap vs the baseline; gap_clean under noise)."""
    return markdown_table(summary_rows(table))
