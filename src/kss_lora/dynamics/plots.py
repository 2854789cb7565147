"""Figures for per-example dynamics: data maps, temporal separation, entropy vs AULC, un-learning.

Matplotlib with the Agg backend (no display needed; safe in tests, CI and worker processes). Every
function writes one PNG and returns its path; none keeps a figure open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .capacity import TemporalSeparation  # noqa: E402
from .entropy import BUCKETS  # noqa: E402

__all__ = ["bucket_trajectories", "data_map", "entropy_scatter", "temporal_separation_plot", "unlearning_bars"]

BUCKET_COLOURS = {"clean": "#1b9e77", "ambiguous": "#7570b3", "contested": "#d95f02"}
NOISE_COLOURS = {False: "#4c72b0", True: "#c44e52"}


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def data_map(table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Dataset cartography map (variability on x, confidence on y; Swayamdipta et al. 2020).

    One panel per colouring the table supports: injected noise (``is_noisy`` with both values present)
    and ChaosNLI entropy bucket (``bucket`` column). Without either, points are coloured by correctness.
    Why both when both exist: noisy labels and human disagreement land in the same low-confidence region,
    and the comparison is the point.
    """
    panels: list[tuple[str, dict[Any, str], str]] = []
    if "is_noisy" in table and table["is_noisy"].nunique() > 1:
        panels.append(("is_noisy", NOISE_COLOURS, "label"))
    if "bucket" in table:
        panels.append(("bucket", BUCKET_COLOURS, "annotation entropy"))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.2 * max(len(panels), 1), 4.4), squeeze=False)
    if not panels:
        ax = axes[0, 0]
        sc = ax.scatter(
            table["variability"],
            table["confidence"],
            c=table["correctness"],
            cmap="viridis",
            s=8,
            alpha=0.6,
            linewidths=0,
        )
        fig.colorbar(sc, ax=ax, label="correctness")
    for ax, (col, colours, legend) in zip(axes[0], panels, strict=False):
        # largest group first, so the rarer groups (noisy items, clean ChaosNLI items) stay visible on top
        order = sorted(colours, key=lambda v: -int((table[col] == v).sum()))
        for value in order:
            colour = colours[value]
            sel = table[col] == value
            if not sel.any():
                continue
            name = {False: "clean", True: "noisy (flipped)"}.get(value, value) if col == "is_noisy" else value
            ax.scatter(
                table.loc[sel, "variability"],
                table.loc[sel, "confidence"],
                s=8,
                alpha=0.55,
                color=colour,
                linewidths=0,
                label=f"{name} (n={int(sel.sum())})",
            )
        ax.legend(title=legend, fontsize=8, markerscale=2, loc="lower right")
    for ax in axes[0]:
        ax.set_xlabel("variability (std of p(y) over epochs)")
        ax.set_ylabel("confidence (mean p(y) over epochs)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def temporal_separation_plot(
    sep: TemporalSeparation, epochs: np.ndarray, path: str | Path, *, capacity_line: str = "", title: str = ""
) -> Path:
    """Fraction of clean vs noisy examples fitted (prediction = trained-on label) over training.

    Marks the most separable point (``best_checkpoint``) and the first point where memorising the noisy
    labels grows faster than fitting the clean ones (``crossover``, "overtaking"). The LoRA capacity line
    is printed under the axes because it is a statement about the whole run, not about a time point.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(epochs, sep.clean_fitted, "o-", color=NOISE_COLOURS[False], label="clean examples fitted")
    ax.plot(epochs, sep.noisy_fitted, "s-", color=NOISE_COLOURS[True], label="noisy examples fitted (memorised)")
    ax.axvline(
        epochs[sep.best_checkpoint],
        color="grey",
        ls=":",
        label=f"max separation (epoch {epochs[sep.best_checkpoint]:.2f}, gap {sep.gap[sep.best_checkpoint]:.2f})",
    )
    if sep.crossover >= 0:
        ax.axvline(
            epochs[sep.crossover],
            color="black",
            ls="--",
            label=f"noisy fitting overtakes (epoch {epochs[sep.crossover]:.2f})",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction predicted as the trained-on label")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    if capacity_line:
        fig.text(0.01, -0.02, capacity_line, fontsize=7.5, ha="left", va="top", wrap=True)
    return _save(fig, path)


def entropy_scatter(items: pd.DataFrame, per_run: pd.DataFrame, path: str | Path, *, which: str = "heldout") -> Path:
    """AULC vs annotation entropy, one panel per condition (first seed's run), with its Spearman rho."""
    sub = items[items["items"] == which]
    conditions = list(dict.fromkeys(sub["condition"]))
    n = max(len(conditions), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.0), squeeze=False, sharey=False)
    for ax, cond in zip(axes[0], conditions, strict=False):
        g = sub[sub["condition"] == cond]
        run = g["run"].iloc[0]
        g = g[g["run"] == run]
        for b in BUCKETS:
            s = g[g["bucket"] == b]
            ax.scatter(s["entropy"], s["aulc"], s=7, alpha=0.5, color=BUCKET_COLOURS[b], linewidths=0, label=b)
        r = per_run[(per_run["run"] == run) & (per_run["items"] == which)]
        rho = float(r["rho"].iloc[0]) if len(r) else float("nan")
        ax.set_title(f"{cond}\n{which} items, seed {r['seed'].iloc[0] if len(r) else '?'}: ρ = {rho:.3f}", fontsize=9)
        ax.set_xlabel("annotation entropy H (nats)")
        ax.set_ylabel("AULC (nats)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, markerscale=2)
    return _save(fig, path)


def bucket_trajectories(trajectories: dict[str, pd.DataFrame], path: str | Path, *, title: str = "") -> Path:
    """Mean loss per entropy bucket over training, one panel per condition: rising curves = un-learning."""
    n = max(len(trajectories), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.8), squeeze=False, sharey=True)
    for ax, (name, frame) in zip(axes[0], trajectories.items(), strict=False):
        for b in BUCKETS:
            if b in frame and frame[b].notna().any():
                ax.plot(frame.index, frame[b], "o-", ms=3, color=BUCKET_COLOURS[b], label=b)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean loss vs majority label (nats)")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def unlearning_bars(delta: pd.DataFrame, path: str | Path, *, which: str = "heldout") -> Path:
    """Δℓ (loss_final − loss_initial) per entropy bucket, bars per condition, with ±1 sem."""
    sub = delta[delta["items"] == which]
    conditions = list(dict.fromkeys(sub["condition"]))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * max(len(conditions), 1), 4.0))
    width = 0.8 / len(BUCKETS)
    x = np.arange(len(conditions))
    for j, b in enumerate(BUCKETS):
        rows = sub[sub["bucket"] == b].set_index("condition").reindex(conditions)
        ax.bar(x + (j - 1) * width, rows["mean"], width, yerr=rows["sem"], color=BUCKET_COLOURS[b], label=b, capsize=2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, conditions, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("Δℓ = loss_final − loss_initial (nats)")
    ax.set_title(f"un-learning per entropy bucket ({which} items)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
