"""The report's figures (matplotlib, headless): loss curves, run tiles, gap vs noise / rank / sparsity.

Each function takes the tidy tables from :mod:`registry` / :mod:`stats`, writes one PNG and returns its path,
or returns None when the runs do not vary what the figure is about (no noise sweep, no gap-vs-noise plot).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 110


def loss_curves(curves: pd.DataFrame, conditions: list[str], path: Path) -> Path | None:
    """Epoch-by-epoch train (eval-mode) and val loss per condition: mean over seeds, band = min..max."""
    if curves.empty:
        return None
    n = len(conditions)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    for ax, cond in zip(axes.flat, conditions):
        c = curves[curves["condition"] == cond]
        for metric, style, color in (
            ("train_loss", "-", "tab:blue"),
            ("val_loss", "--", "tab:red"),
            ("train_loss_clean", ":", "tab:green"),
        ):
            if metric == "train_loss_clean" and np.allclose(c["train_loss_clean"], c["train_loss"]):
                continue
            g = c.groupby("epoch")[metric]
            mean, lo, hi = g.mean(), g.min(), g.max()
            ax.plot(mean.index, mean.values, style, color=color, label=metric.replace("_", " "))
            ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.15)
        ax.set_title(cond, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].set_ylabel("loss (nats)")
    handles = [
        plt.Line2D([], [], ls="-", color="tab:blue"),
        plt.Line2D([], [], ls="--", color="tab:red"),
        plt.Line2D([], [], ls=":", color="tab:green"),
    ]
    fig.legend(
        handles,
        ["train loss (labels trained on)", "val loss", "train loss vs clean labels (under noise)"],
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("Loss per epoch (train = eval-mode pass over the training set; band = range over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 if rows > 1 else 0.1, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def run_tiles(runs: pd.DataFrame, conditions: list[str], path: Path, metric: str = "gap_clean") -> Path | None:
    """One tile per run (rows: conditions, columns: seeds), coloured by its gap; failed runs are grey.

    The clean-label gap by default: it equals ``gap`` without noise, and under noise it is the one that says
    whether a run memorised (the gap vs the noisy labels goes negative for every method, docs/spec.md §2)."""
    if runs.empty:
        return None
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    grid = np.full((len(conditions), len(seeds)), np.nan)
    failed = np.zeros_like(grid, dtype=bool)
    for i, cond in enumerate(conditions):
        for _, r in runs[runs["condition"] == cond].iterrows():
            if pd.isna(r["seed"]):
                continue
            j = seeds.index(int(r["seed"]))
            if r["status"] == "ok":
                grid[i, j] = r[metric]
            else:
                failed[i, j] = True
    finite = grid[np.isfinite(grid)]
    vmax = max(float(np.abs(finite).max()), 1e-6) if len(finite) else 1.0
    fig, ax = plt.subplots(figsize=(max(5.5, 2.2 + 0.9 * len(seeds)), 1.2 + 0.42 * len(conditions)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="coolwarm", vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(len(conditions)):
        for j in range(len(seeds)):
            if failed[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.6"))
                ax.text(j, i, "failed", ha="center", va="center", fontsize=7)
            elif np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds], fontsize=8)
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    fig.colorbar(im, ax=ax, label=metric.replace("_", " ") + " (nats)")
    what = "gap_clean\n(val − train loss on the true labels; = gap at 0% noise)" if metric == "gap_clean" else metric
    ax.set_title(f"Every run, coloured by {what}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def gap_vs(table: pd.DataFrame, runs: pd.DataFrame, column: str, xlabel: str, path: Path) -> Path | None:
    """Mean ± std gap against ``column``, one line per arm; None if nothing varies along it.

    Under noise (``column`` = noise_rate) both gap forms are drawn. For the other axes only 0%-noise runs are
    used, and when every arm sits at a single x (the five-config presets each have one ρ) the lines are drawn
    per γ instead, so a line never mixes learning-rate scales.
    """
    ok = runs[runs["status"] == "ok"]
    if column != "noise_rate":
        ok = ok[ok["noise_rate"].fillna(0) == 0]
    if ok.empty or ok[column].nunique(dropna=True) < 2:
        return None
    has_noise = column == "noise_rate" and (ok["noise_rate"].fillna(0) > 0).any()
    series = list(ok.groupby("arm", sort=False))
    if all(g[column].nunique() < 2 for _, g in series):
        series = [(f"γ={gamma:g}", g) for gamma, g in ok.groupby("gamma", sort=True)]
    series = [(name, g) for name, g in series if g[column].nunique() >= 2]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, g) in enumerate(series):
        color = colors[k % len(colors)]
        for metric, style in (("gap_clean", "-o"), ("gap", "--x")) if has_noise else (("gap", "-o"),):
            s = g.groupby(column)[metric].agg(["mean", "std"]).sort_index()
            label = f"{name} ({metric})" if has_noise else name
            ax.errorbar(
                s.index,
                s["mean"],
                yerr=s["std"].fillna(0),
                fmt=style,
                color=color,
                capsize=3,
                label=label,
                alpha=0.6 if has_noise and metric == "gap" else 1.0,
            )
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val loss − train loss (nats)")
    title = f"Gap vs {xlabel}" + (
        "\nsolid: vs the true labels (gap_clean); dashed: vs the noisy labels trained on"
        if has_noise
        else " (0% noise; mean ± std over seeds)"
    )
    ax.set_title(title, fontsize=9)
    if column == "rank":
        ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
