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

__all__ = ["evaluate_detection", "evaluate_per_class", "evaluate_per_group", "prf"]


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
    df = evaluate_per_group(truth, scores, labels, flags, column="class")
    return df.astype({"class": int}) if len(df) else df


def evaluate_per_group(
    truth: Any, scores: Any, groups: Any, flags: Any = None, *, column: str = "group"
) -> pd.DataFrame:
    """:func:`evaluate_detection` within each group (one row per distinct value of ``groups``, sorted, named
    by ``column``): per class, per entropy bucket of ChaosNLI items (are the errors a detector finds the
    clear ones or the ambiguous ones?). ``k`` is the group's own error count."""
    t = _mask("truth", truth)
    g = np.asarray(groups)
    if g.shape != t.shape:
        raise DataError(f"{column} shape {g.shape} does not match truth shape {t.shape}")
    s = np.asarray(scores, dtype=np.float64)
    f = _mask("flags", flags, t.size) if flags is not None else None
    rows = []
    for value in np.unique(g):
        m = g == value
        row = evaluate_detection(t[m], s[m], None if f is None else f[m])
        rows.append({column: value.item() if hasattr(value, "item") else value, **row})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- verdicts (reporting)

PUBLISHED_F1 = 0.911  # RACT's published F1 (AG News, at 91.46% accuracy; setting not published)


def condition_name(detector: str, setting: str) -> str:
    """The ``condition`` value of one detector in one noise setting (claims.csv names arms by it)."""
    return f"{detector} @ {setting}"


def detection_claims(runs: pd.DataFrame) -> list[Any]:
    """The detection results judged by the lab's verdict engine, from per-run rows (setting, seed, detector, ...).

    Per noise setting (one Holm family across settings): the published RACT F1 (one-sample t of our
    reconstruction's F1 at k; holds needs the interval to reach 0.911); whether that score ranks noisy labels
    below chance (AUROC < 0.5); and whether the curriculum variant beats AUM (paired by seed).
    """
    from kss_lora.lab.verdicts import ClaimVerdict, combine, compare_paired, compare_to_value, judge_family

    settings = list(dict.fromkeys(runs["setting"]))

    def having(*detectors: str) -> list[str]:
        """The settings in which every named detector ran (later settings run subsets of them)."""
        return [s for s in settings if all(((runs["setting"] == s) & (runs["detector"] == d)).any() for d in detectors)]

    def values(detector: str, setting: str, metric: str) -> pd.Series:
        rows = runs[(runs["detector"] == detector) & (runs["setting"] == setting)]
        return rows.set_index("seed")[metric].astype(float)

    def one_arm(cid: str, detector: str, metric: str, value: float, direction: str, claimed: float | None) -> list:
        parts = []
        for s in having(detector):
            c = compare_to_value(
                values(detector, s, metric),
                claim=cid,
                metric=metric,
                label=condition_name(detector, s),
                value=value,
                direction=direction,
            )
            parts.append(c if claimed is None else _replace(c, claimed=claimed))
        return judge_family(parts)

    def summary(parts: list, scale: float = 1.0, shift: float = 0.0) -> str:
        return "; ".join(
            f"{c.treatment} (n={c.n_treatment}) {c.effect + shift:.3f}"
            + (f" [{c.ci_low + shift:.3f}, {c.ci_high + shift:.3f}]" if np.isfinite(c.ci_low) else "")
            for c in parts
        )

    f1 = one_arm("ract-f1", "ract", "f1_at_k", 0.0, "greater", PUBLISHED_F1)
    below = one_arm("ract-below-chance", "ract", "auroc", 0.5, "less", None)
    paired = []
    for s in having("ract-curriculum", "aum"):
        a, b = values("ract-curriculum", s, "f1_at_k"), values("aum", s, "f1_at_k")
        both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
        paired.append(
            compare_paired(
                both["a"],
                both["b"],
                claim="curriculum-vs-aum",
                metric="f1_at_k",
                treatment_label=condition_name("ract-curriculum", s),
                control_label=condition_name("aum", s),
                direction="greater",
                pair="seed",
            )
        )
    paired = judge_family(paired)
    return [
        ClaimVerdict(
            "ract-f1",
            "RACT detects noisy labels at 91.1% F1 (our reconstruction of its score, F1 at k = true noise count)",
            f"F1 {PUBLISHED_F1:.1%} at 91.46% accuracy, AG News (setting not published)",
            summary(f1),
            combine([c.verdict for c in f1]),
            "one-sample t per setting, Holm over settings; the published setting is unknown",
            f1,
        ),
        ClaimVerdict(
            "ract-below-chance",
            "(finding) The reconstructed RACT score ranks noisy labels below chance (AUROC < 0.5)",
            "not a published claim",
            summary(below, shift=0.5),
            combine([c.verdict for c in below]),
            "AUROC − 0.5, one-sample t per setting, Holm over settings",
            below,
        ),
        ClaimVerdict(
            "curriculum-vs-aum",
            "(finding) The RACT curriculum variant beats AUM (F1 at k, paired by seed)",
            "not a published claim",
            "; ".join(f"{c.treatment} − {c.control} (n={c.n_treatment}) {c.effect:+.3f}" for c in paired),
            combine([c.verdict for c in paired]),
            "paired t over seeds per setting, Holm over settings",
            paired,
        ),
    ]


def _replace(c: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(c, **changes)


def write_detection_claims(folder: Any, *, detection_csv: str = "detection.csv") -> list[Any]:
    """runs.csv (detection.csv with a ``condition`` column), claims.csv and verdicts.md in ``folder``."""
    from pathlib import Path

    from kss_lora.lab.verdicts import CLAIM_COLUMNS, EXTRA_COLUMNS
    from kss_lora.tables import markdown_table, write_csv

    folder = Path(folder)
    try:
        runs = pd.read_csv(folder / detection_csv)
    except OSError as exc:
        raise DataError(f"detection: cannot read {folder / detection_csv} ({exc})") from None
    missing = [c for c in ("setting", "seed", "detector", "f1_at_k", "auroc") if c not in runs]
    if missing:
        raise DataError(f"detection: {detection_csv} needs the columns {', '.join(missing)}")
    runs.insert(0, "condition", [condition_name(d, s) for d, s in zip(runs["detector"], runs["setting"])])
    # A detector that read a run stuck at the label prior scored a broken model: kept in runs.csv, not judged.
    near = runs["runs_near_prior"].fillna(0).to_numpy() > 0 if "runs_near_prior" in runs else np.zeros(len(runs), bool)
    runs.insert(1, "status", np.where(near, "near prior", "ok"))
    runs.to_csv(folder / "runs.csv", index=False)
    claims = detection_claims(runs[runs["status"] == "ok"])
    write_csv(folder / "claims.csv", [r for c in claims for r in c.rows()], [*CLAIM_COLUMNS, *EXTRA_COLUMNS])
    text = [
        "# Noise detection: verdicts from the verdict engine",
        "",
        "Generated from `detection.csv` (as `runs.csv`, with a `condition` column). One-sided tests in the "
        "claimed direction, Holm over the noise settings, 90% intervals, n ≥ 3 per arm (sym40 has 2 seeds and "
        "asym30 1: `too few runs` there). Every comparison is in claims.csv. Rows whose detector read a run "
        "stuck near the label prior (`runs_near_prior` > 0, status `near prior` in runs.csv) are not judged.",
        "",
        markdown_table([c.as_dict() for c in claims]),
        "",
    ]
    (folder / "verdicts.md").write_text("\n".join(text))
    return [folder / "runs.csv", folder / "claims.csv", folder / "verdicts.md"]
