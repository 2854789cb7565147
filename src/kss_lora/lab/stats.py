"""Statistics over seeds (docs/spec.md §2): mean ± std, Welch t, Mann-Whitney U, bootstrap CI, range overlap.

The two-sample helpers are plain functions on arrays so they can be checked against scipy on fixed numbers;
:func:`aggregate` turns a runs table into one tidy row per condition, comparing each condition with the
baseline arm *in the same stratum* (e.g. KSS at 20% noise vs the baseline at 20% noise).

With 5 seeds per condition every p-value is coarse (the smallest two-sided Mann-Whitney p is 2/252 ≈ 0.008),
so the report leans on the bootstrap CI of the difference and on whether the ranges overlap at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

METRICS = ("train_loss", "train_loss_clean", "val_loss", "gap", "gap_clean", "val_accuracy", "test_accuracy")
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
    """Whether [min a, max a] and [min b, max b] intersect (the seeds' "zero overlap" claim is ``False``)."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return None
    return bool(a.min() <= b.max() and b.min() <= a.max())


def compare(a: Any, b: Any, *, seed: int = 0) -> dict[str, Any]:
    """Everything the report says about group ``a`` vs group ``b`` on one metric."""
    a, b = _clean(a), _clean(b)
    lo, hi = bootstrap_ci(a, b, seed=seed)
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


def aggregate(runs: pd.DataFrame, *, baseline: str | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per condition (arm × stratum): n, mean/std of each metric, and comparisons with the baseline.

    Columns per metric ``m``: ``m_mean``, ``m_std``. Versus the baseline arm of the same stratum:
    ``kappa_abs`` (= mean gap), ``kappa_rel`` (gap / baseline gap), ``kappa_rel_clean`` (same on gap_clean),
    ``quality_cost`` ((val − val_base) / val_base), and for ``gap`` and ``gap_clean``: difference, bootstrap
    95% CI, Welch and Mann-Whitney p-values, range overlap. Only finished (``ok``) runs count.
    """
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
            v = _clean(group[m])
            row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row["kappa_abs"] = row["gap_mean"]
        base = ok[(ok["arm"] == baseline) & (ok["stratum"] == stratum)] if baseline is not None else ok.iloc[0:0]
        if len(base):
            row["baseline_gap_mean"] = float(_clean(base["gap"]).mean())
            row["baseline_gap_clean_mean"] = float(_clean(base["gap_clean"]).mean())
            row["kappa_rel"] = _ratio(row["gap_mean"], float(_clean(base["gap"]).mean()))
            row["kappa_rel_clean"] = _ratio(row["gap_clean_mean"], float(_clean(base["gap_clean"]).mean()))
            base_val = float(_clean(base["val_loss"]).mean())
            row["quality_cost"] = _ratio(row["val_loss_mean"] - base_val, base_val)
            for m in ("gap", "gap_clean", "val_loss"):
                for k, v in compare(group[m], base[m], seed=seed).items():
                    row[f"{m}_{k}"] = v
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
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


def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"


def fmt_p(p: Any) -> str:
    if p is None or not isinstance(p, (int, float)) or not math.isfinite(p):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_num(x: Any, digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def summary_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The main columns of :func:`aggregate`, formatted for humans (Markdown and HTML share them)."""
    out = []
    for _, r in table.iterrows():
        # Under label noise the comparison is on gap_clean (docs/spec.md §2): the noisy-label gap shrinks for everyone.
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
                "quality cost": "–" if r["is_baseline"] else _pct(r.get("quality_cost")),
                "gap diff 95% CI": ci + (" (clean)" if m == "gap_clean" and ci != "–" else ""),
                "Welch p": "–" if r["is_baseline"] else fmt_p(r.get(f"{m}_welch_p")),
                "MWU p": "–" if r["is_baseline"] else fmt_p(r.get(f"{m}_mwu_p")),
                "ranges overlap": overlap,
            }
        )
    return out


def _kappa(r: Any, col: str, base_col: str) -> str:
    """κ_rel is a ratio to the baseline gap: meaningless when that gap is not positive (e.g. under noise)."""
    if r["is_baseline"]:
        return "–"
    base = r.get(base_col)
    if isinstance(base, float) and math.isfinite(base) and base <= 0:
        return "n/a"
    return fmt_num(r.get(col), 3)


def _pct(x: Any) -> str:
    return "–" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{100 * x:+.1f}%"


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_no finished runs_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(table: pd.DataFrame) -> str:
    """The aggregate table's main columns as Markdown (p-values and CI: gap vs the baseline; gap_clean under noise)."""
    return markdown_table(summary_rows(table))
