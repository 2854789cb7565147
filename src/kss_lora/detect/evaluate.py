"""Scoring a detector against a known truth mask (injected noise): P/R/F1 at k and at flags, AUROC, AUPRC.

Why these numbers: a detector's *ranking* (AUROC, AUPRC) and its *decision* (flags) can fail separately.
Precision/recall/F1 at ``k = true noise count`` measure the ranking with an oracle count (at that k,
precision = recall = F1); at the detector's own flags they measure what a user without the oracle gets.
AUROC and AUPRC come from scikit-learn (AUPRC = average precision, the step-wise area, not the
trapezoid, which overestimates). Per-class rows group examples by their **given** (possibly noisy) label,
because that is the only label a user of the detector can group by.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import DataError

__all__ = ["evaluate_detection", "evaluate_per_class", "prf"]


def _mask(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.all(np.isin(arr, (0, 1))):
            raise DataError(f"{name} must be boolean or 0/1")
        arr = arr.astype(bool)
    if n is not None and arr.size != n:
        raise DataError(f"{name} has {arr.size} entries, expected {n}")
    return arr


def prf(truth: Any, flags: Any) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean ``flags`` against boolean ``truth`` (0.0 where undefined,
    as ``sklearn.metrics.precision_recall_fscore_support(zero_division=0)``)."""
    t = _mask("truth", truth)
    f = _mask("flags", flags, t.size)
    tp = int(np.count_nonzero(t & f))
    precision = tp / int(f.sum()) if f.any() else 0.0
    recall = tp / int(t.sum()) if t.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    flags = np.zeros(scores.size, dtype=bool)
    if k > 0:
        flags[np.argsort(-scores, kind="stable")[:k]] = True
    return flags


def evaluate_detection(truth: Any, scores: Any, flags: Any = None) -> dict[str, float]:
    """All detection metrics of one detector on one run.

    Args:
        truth: bool mask, True where the given label is wrong (e.g. ``NoiseResult.is_noisy``).
        scores: per-example scores, higher = more suspicious.
        flags: the detector's own boolean decisions; the ``*_flags`` metrics are NaN when absent.

    Returns:
        ``n, n_noisy, precision_at_k, recall_at_k, f1_at_k`` (k = ``n_noisy``), ``n_flagged,
        precision_flags, recall_flags, f1_flags``, ``auroc``, ``auprc`` (NaN when truth has one class).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    t = _mask("truth", truth)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != t.shape:
        raise DataError(f"scores shape {s.shape} does not match truth shape {t.shape}")
    if not np.all(np.isfinite(s)):
        raise DataError("scores contain NaN or inf")
    k = int(t.sum())
    pk, rk, fk = prf(t, _top_k(s, k))
    out: dict[str, float] = {
        "n": int(t.size),
        "n_noisy": k,
        "precision_at_k": pk,
        "recall_at_k": rk,
        "f1_at_k": fk,
    }
    if flags is not None:
        f = _mask("flags", flags, t.size)
        pf, rf, ff = prf(t, f)
        out.update(n_flagged=int(f.sum()), precision_flags=pf, recall_flags=rf, f1_flags=ff)
    else:
        out.update(
            n_flagged=float("nan"), precision_flags=float("nan"), recall_flags=float("nan"), f1_flags=float("nan")
        )
    both = 0 < k < t.size
    out["auroc"] = float(roc_auc_score(t, s)) if both else float("nan")
    out["auprc"] = float(average_precision_score(t, s)) if both else float("nan")
    return out


def evaluate_per_class(truth: Any, scores: Any, labels: Any, flags: Any = None) -> pd.DataFrame:
    """:func:`evaluate_detection` within each given-label class (one row per class, ``class`` column).

    ``k`` is the class's own true noise count, so per-class ``f1_at_k`` asks "could the ranking find
    this class's errors if it knew how many there were".
    """
    t = _mask("truth", truth)
    y = np.asarray(labels)
    if y.shape != t.shape:
        raise DataError(f"labels shape {y.shape} does not match truth shape {t.shape}")
    s = np.asarray(scores, dtype=np.float64)
    f = _mask("flags", flags, t.size) if flags is not None else None
    rows = []
    for c in np.unique(y):
        m = y == c
        row = evaluate_detection(t[m], s[m], None if f is None else f[m])
        rows.append({"class": int(c), **row})
    return pd.DataFrame(rows)
