"""The best LoRA rank per noise rate over a rank x noise sweep (``kss optimal-rank``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import ConfigError, DataError
from kss_lora.methods.specs import recorded_uses_lora

__all__ = ["RANK_METRICS", "optimal_rank"]


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
