"""Clean and retrain: drop or relabel flagged examples, train again, compare with the ceiling and floor.

Why: a detector is worth what cleaning with it buys. The comparison needs two reference points trained
on the same examples with the same config and seed: the **ceiling** (the true labels; only available
when the noise was injected) and the **floor** (the noisy labels as given). The gap closed,
``(cleaned - floor) / (ceiling - floor)``, is reported next to the raw test accuracies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.config import RunConfig
from kss_lora.errors import ConfigError, KSSError

from .training import configure, prepare, train, training_labels

__all__ = ["ACTIONS", "bounds", "clean_and_retrain", "retrain_table"]

ACTIONS = ("drop", "relabel")


def _row(name: str, result: Mapping[str, Any], n_train: int) -> dict[str, Any]:
    return {
        "condition": name,
        "n_train": n_train,
        "test_accuracy": result.get("test_accuracy"),
        "test_loss": result.get("test_loss"),
        "val_accuracy": result.get("val_accuracy"),
        "val_loss": result.get("val_loss"),
        "noise_rate_trained": result.get("noise_rate_realised"),
    }


def clean_and_retrain(
    cfg: RunConfig,
    flags: Any,
    out_dir: str | Path,
    *,
    action: str = "drop",
    suggested_labels: Any = None,
    name: str = "cleaned",
) -> dict[str, Any]:
    """Retrain ``cfg`` with the flagged training examples dropped or relabelled; return a table row.

    Args:
        cfg: the same config the detector ran on (its noise block reproduces the same noisy labels).
        flags: bool mask over the training split, in the split's order (``DetectionResult.flags[d]``).
        out_dir: the run goes to ``<out_dir>/<name>``.
        action: ``"drop"`` removes flagged examples; ``"relabel"`` gives them ``suggested_labels``.
        suggested_labels: required for ``relabel`` (``DetectionResult.suggested_labels``).

    Returns:
        ``condition, n_train, test_accuracy, test_loss, val_accuracy, val_loss, noise_rate_trained``
        (the last is the fraction of wrong labels left in what was trained on, when the truth is known).
    """
    if action not in ACTIONS:
        raise ConfigError("retrain.action", f"unknown {action!r}; allowed: {', '.join(ACTIONS)}")
    run_cfg = configure(cfg, track=False)
    given = training_labels(run_cfg)
    f = np.asarray(flags, dtype=bool)
    if f.shape != given.shape:
        raise KSSError(f"retrain: flags cover {f.size} examples but the training split has {given.size}")
    if action == "drop":
        run = prepare(run_cfg, train_index=np.flatnonzero(~f))
    else:
        if suggested_labels is None:
            raise ConfigError("retrain.action", "relabel needs suggested_labels")
        run = prepare(run_cfg, train_labels=np.where(f, np.asarray(suggested_labels, dtype=np.int64), given))
    trained = train(run, Path(out_dir) / name)
    return _row(name, trained.result, len(trained.train_ids))


def bounds(
    cfg: RunConfig, out_dir: str | Path, *, floor_result: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Ceiling (true labels) and floor (noisy labels) rows; the floor reuses ``floor_result`` when given
    (e.g. the detection pipeline's reference run, which is exactly the floor's config)."""
    rows = []
    if cfg.noise.active:
        clean_cfg = configure(cfg, track=False)
        clean_cfg.noise.rate, clean_cfg.noise.transition, clean_cfg.noise.pairs = 0.0, None, None
        clean_cfg.noise.kind = "symmetric"
        trained = train(prepare(clean_cfg.validate()), Path(out_dir) / "ceiling")
        rows.append(_row("ceiling (true labels)", trained.result, len(trained.train_ids)))
    if floor_result is None:
        trained = train(prepare(configure(cfg, track=False)), Path(out_dir) / "floor")
        floor_result, n = trained.result, len(trained.train_ids)
    else:
        n = int(floor_result.get("n_train", 0))
    rows.append(_row("floor (noisy labels)", floor_result, n))
    return rows


def retrain_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows to a table with ``gap_closed = (acc - floor) / (ceiling - floor)`` when both bounds exist."""
    df = pd.DataFrame(rows)
    ceil = df.loc[df["condition"].str.startswith("ceiling"), "test_accuracy"]
    floor = df.loc[df["condition"].str.startswith("floor"), "test_accuracy"]
    if len(ceil) and len(floor) and ceil.iloc[0] is not None and floor.iloc[0] is not None:
        c, f = float(ceil.iloc[0]), float(floor.iloc[0])
        df["gap_closed"] = (df["test_accuracy"].astype(float) - f) / (c - f) if c != f else np.nan
        df["vs_ceiling_points"] = 100.0 * (df["test_accuracy"].astype(float) - c)
    return df
