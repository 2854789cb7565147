"""The best LoRA rank per noise rate over a rank x noise sweep (``kss optimal-rank``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import ConfigError, DataError
from kss_lora.methods.specs import recorded_uses_lora

__all__ = ["RANK_METRICS", "optimal_rank", "rank_falls_claim"]


RANK_METRICS = {"val_loss": "min", "val_accuracy": "max", "gap_clean": "min", "test_accuracy": "max"}


def optimal_rank(results: Sequence[dict[str, Any]], *, metric: str = "val_loss") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best LoRA rank per noise rate from finished runs' ``result.json`` contents.

    Why a separate summary: the theory (Steele) predicts the optimal rank *decreases* with the noise
    rate; the sweep's per-condition statistics show each (rank, noise) cell but not the arg-best per row.
    Returns ``(cells, best)``: mean/std/n of ``metric`` per (noise_rate, rank), and per noise rate the best
    rank with its mean and the ranks whose mean lies within one standard error of the best (ties in effect).
    Only LoRA-family runs with ``status: ok`` count. ``metric`` is judged on clean labels: validation and
    test sets are never corrupted (docs/spec.md §2), so ``val_loss`` is a clean quantity.
    """
    if metric not in RANK_METRICS:
        raise ConfigError("--metric", f"unknown value {metric!r}; allowed: {', '.join(RANK_METRICS)}")
    rows = [
        r
        for r in results
        if r.get("status") == "ok"
        and r.get("rank") is not None
        and recorded_uses_lora(r.get("method"))
        and r.get(metric) is not None
    ]
    if not rows:
        raise DataError(f"no finished LoRA runs with {metric} to compare")
    frame = pd.DataFrame(
        {
            "noise_rate": [float(r.get("noise_rate") or 0.0) for r in rows],
            "rank": [int(r["rank"]) for r in rows],
            metric: [float(r[metric]) for r in rows],
        }
    )
    cells = frame.groupby(["noise_rate", "rank"])[metric].agg(["mean", "std", "count"]).reset_index()
    cells["sem"] = cells["std"] / np.sqrt(cells["count"])
    better_low = RANK_METRICS[metric] == "min"
    best_rows = []
    for noise, g in cells.groupby("noise_rate"):
        i = g["mean"].idxmin() if better_low else g["mean"].idxmax()
        b = g.loc[i]
        tol = 0.0 if np.isnan(b["sem"]) else float(b["sem"])
        close = g[(g["mean"] - b["mean"]).abs() <= tol]["rank"].tolist()
        best_rows.append(
            {
                "noise_rate": noise,
                "best_rank": int(b["rank"]),
                "metric": metric,
                "best_mean": float(b["mean"]),
                "best_sem": float(b["sem"]),
                "runs": int(b["count"]),
                "within_1_sem": ",".join(str(int(r)) for r in close),
            }
        )
    return cells, pd.DataFrame(best_rows)


def rank_falls_claim(runs: pd.DataFrame, *, metric: str = "val_loss") -> Any:
    """Steele's claim "the optimal rank falls as the noise rate rises", judged by the verdict engine.

    ``runs``: one row per finished run with ``condition``, ``rank``, ``noise_rate`` and ``metric`` (a lab runs
    table). The best rank at 0% noise, r0, is the arm to beat: at the highest noise rate each lower rank is
    compared with r0 (Welch, one-sided in the better direction, Holm over the lower ranks). The claim holds when
    some lower rank is significantly better there; it does not hold when every lower rank is significantly
    *not* better (its interval excludes an improvement); with r0 already the lowest rank it cannot show.
    """
    from ..lab.verdicts import (
        DOES_NOT_HOLD,
        HOLDS,
        INCONCLUSIVE,
        NOT_MEASURED,
        TOO_FEW_RUNS,
        ClaimVerdict,
        compare,
        judge_family,
    )

    cid = "optimal-rank"
    text = "The optimal LoRA rank falls as the label-noise rate rises"
    published = "Steele, 'Why LoRA Resists Label Noise' (theory: r* decreases with the noise rate)"
    cells, best = optimal_rank(runs.to_dict("records"), metric=metric)
    rates = sorted(best["noise_rate"])
    if len(rates) < 2 or rates[0] != 0.0:
        return ClaimVerdict(cid, text, published, "–", NOT_MEASURED, "needs runs at 0% and at a higher noise rate")
    r0 = int(best.loc[best["noise_rate"] == 0.0, "best_rank"].iloc[0])
    top = rates[-1]
    r_top = int(best.loc[best["noise_rate"] == top, "best_rank"].iloc[0])
    direction = "less" if RANK_METRICS[metric] == "min" else "greater"
    noisy = runs[np.isclose(pd.to_numeric(runs["noise_rate"], errors="coerce").fillna(0.0), top)]

    def arm(rank: int) -> pd.DataFrame:
        return noisy[noisy["rank"].astype(int) == rank]

    lower = sorted(r for r in set(noisy["rank"].astype(int)) if r < r0)
    path = ", ".join(f"{g:.0%}: r = {int(b)}" for g, b in zip(best["noise_rate"], best["best_rank"]))
    measured = f"best rank by mean {metric}: {path}"
    if not lower:
        return ClaimVerdict(cid, text, published, measured, INCONCLUSIVE, f"r = {r0} is the lowest rank run at 0%")
    parts = judge_family(
        [
            compare(
                arm(r)[metric],
                arm(r0)[metric],
                claim=cid,
                metric=metric,
                treatment_label=" + ".join(dict.fromkeys(arm(r)["condition"].astype(str))),
                control_label=" + ".join(dict.fromkeys(arm(r0)["condition"].astype(str))),
                direction=direction,
                role=f"at {top:.0%} noise: a lower rank vs the best rank at 0% (r = {r0})",
            )
            for r in lower
        ]
    )
    verdicts = [c.verdict for c in parts]
    if HOLDS in verdicts:
        verdict = HOLDS
    elif all(v == DOES_NOT_HOLD for v in verdicts):
        verdict = DOES_NOT_HOLD
    else:
        verdict = TOO_FEW_RUNS if TOO_FEW_RUNS in verdicts else INCONCLUSIVE
    note = f"best rank {r0} at 0% and {r_top} at {top:.0%}; " + "; ".join(
        f"r = {lo} vs r = {r0}: {c.effect:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], Holm p {c.p_adjusted:.3f} ({c.verdict})"
        for lo, c in zip(lower, parts)
    )
    return ClaimVerdict(cid, text, published, measured, verdict, note, parts)
