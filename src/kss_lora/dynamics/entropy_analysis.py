"""The annotation-entropy analysis (Steele): does a ChaosNLI item's annotation entropy predict how hard it is
to learn (AULC), and do contested items get "un-learned"? ``kss entropy`` runs it.

:func:`entropy_analysis` joins the AULC of ChaosNLI items (held-out and in-training) with their annotation
entropy across many runs and tests Steele's claim (Spearman rho 0.06-0.43, positive in all conditions; LoRA
"un-learns" contested items, full fine-tuning does not). :mod:`.entropy_report` writes it as Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import DataError

from .entropy import BUCKETS
from .metrics import aulc, unlearning
from .runs import RunInfo, chaosnli_items
from .stats import delta_by_bucket, hierarchical_r2, partial_spearman, spearman_with_ci

__all__ = ["CONFOUNDERS", "PAPER_RHO_RANGE", "PRIOR", "EntropyReport", "correlate", "entropy_analysis", "item_frame"]

PAPER_RHO_RANGE = (0.06, 0.43)
"""Steele's reported Spearman rho between annotation entropy and AULC, over 25 conditions."""


def item_frame(run: RunInfo, which: str) -> pd.DataFrame | None:
    """Per-item AULC, Δℓ and initial loss against ChaosNLI's majority label, joined with entropy.

    ``which`` is ``"heldout"`` (never trained on: Steele's tracked items) or ``"train"`` (in-training
    items, scored against the *clean* majority label even if noise was injected). None if not tracked.
    """
    dyn = run.dynamics
    if which == "heldout":
        out = dyn.heldout()
        if out is None:
            return None
        ids = dyn.arrays["heldout_ids"]
    else:
        out = dyn.checkpoint(labels=dyn.clean_labels)
        ids = dyn.arrays["ids"]
    items = chaosnli_items(run, which)
    rows = items.iloc[ids]
    prior = np.bincount(dyn.clean_labels, minlength=int(dyn.arrays["ckpt_logits"].shape[-1])) / len(dyn.clean_labels)
    majority = rows["majority_label"].to_numpy()
    return pd.DataFrame(
        {
            "uid": rows["uid"].to_numpy(),
            "entropy": rows["entropy_nats"].to_numpy(),
            "majority_label": np.asarray(items.attrs.get("label_names", list(range(len(prior)))), dtype=object)[
                majority
            ],
            "prior_loss": -np.log(np.maximum(prior[majority], 1e-12)),
            "bucket": rows["bucket"].to_numpy(),
            "text_words": rows["text_words"].to_numpy(),
            "aulc": aulc(out.loss),
            "loss_initial": out.loss[0],
            "unlearning": unlearning(out.loss),
            "final_correct": out.correct[-1],
        }
    )


def correlate(
    entropy: Any, aulc_values: Any, confounders: Any, *, n_boot: int = 1000, seed: int = 0, extra: Any = None
) -> dict[str, float]:
    """Spearman rho(H, AULC) with bootstrap CI, partial rho given the confounders, and ΔR² of entropy.

    The ΔR² is on ranks (a Spearman-style hierarchical regression): how much of AULC's rank variance
    entropy explains beyond the confounders' ranks. ``extra`` (optional ``[n]`` or ``[n, j]``) adds a
    second partial rho controlling for the confounders *and* these columns (``partial_rho_extra``).
    """
    from scipy.stats import rankdata

    h = np.asarray(entropy, dtype=float)
    a = np.asarray(aulc_values, dtype=float)
    z = np.asarray(confounders, dtype=float).reshape(len(h), -1)
    sp = spearman_with_ci(h, a, n_boot=n_boot, seed=seed)
    pa = partial_spearman(h, a, z, n_boot=n_boot, seed=seed)
    hr = hierarchical_r2(rankdata(a), np.column_stack([rankdata(c) for c in z.T]), rankdata(h))
    out = {
        "n": sp.n,
        "rho": sp.rho,
        "p": sp.p,
        "ci_low": sp.ci_low,
        "ci_high": sp.ci_high,
        "partial_rho": pa.rho,
        "partial_p": pa.p,
        "partial_ci_low": pa.ci_low,
        "partial_ci_high": pa.ci_high,
        "delta_r2": hr.delta_r2,
        "delta_r2_p": hr.p_value,
    }
    if extra is not None:
        zx = np.column_stack([z, np.asarray(extra, dtype=float).reshape(len(h), -1)])
        px = partial_spearman(h, a, zx, n_boot=0)
        out.update(partial_rho_extra=px.rho, partial_p_extra=px.p)
    return out


@dataclass
class EntropyReport:
    """Everything ``kss entropy`` writes: per-run and per-condition correlations, Δℓ per bucket, the
    LoRA vs full fine-tuning comparison on contested items, and the items behind them (for plots)."""

    per_run: pd.DataFrame
    per_condition: pd.DataFrame
    delta: pd.DataFrame
    lora_vs_full: pd.DataFrame
    items: pd.DataFrame
    by_label: pd.DataFrame = field(default_factory=pd.DataFrame)
    trajectories: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


CONFOUNDERS = ("text_words", "loss_initial")
PRIOR = "prior_loss"
"""-ln (training frequency of the item's majority label): the loss of a model that learned only the label
prior. A weakly trained model's AULC is mostly this, and contested items may have rarer majority labels,
so the report adds a partial rho that also controls for it."""


def entropy_analysis(runs: Sequence[RunInfo], *, n_boot: int = 1000, seed: int = 0) -> EntropyReport:
    """Steele's analysis over runs trained on ChaosNLI (see the module docstring).

    Per run and item set (held-out, in-training): Spearman rho(H, AULC) with a bootstrap CI, partial rho
    controlling for text length and initial loss, ΔR². Per condition (model, method, rank; seeds pooled by
    averaging each item's AULC and Δℓ over seeds first): the same statistics, Δℓ per entropy bucket, and,
    per model, LoRA vs full fine-tuning on contested items (paired over items, bootstrap CI).
    """
    rows, frames, notes = [], [], []
    trajectories: dict[tuple[str, str], pd.DataFrame] = {}
    for run in runs:
        if not run.is_chaosnli:
            notes.append(f"skipped {run.run_dir.name}: data.source is {run.get('data.source')!r}, not chaosnli")
            continue
        if run.result is not None and run.result.get("status") not in (None, "ok"):
            notes.append(f"skipped {run.run_dir.name}: status {run.result.get('status')}")
            continue
        for which in ("heldout", "train"):
            frame = item_frame(run, which)
            if frame is None:
                continue
            stats = correlate(
                frame["entropy"], frame["aulc"], frame[list(CONFOUNDERS)], n_boot=n_boot, seed=seed, extra=frame[PRIOR]
            )
            acc = float(frame["final_correct"].mean())
            rows.append(
                {
                    "run": run.run_dir.name,
                    "condition": run.condition,
                    "model": run.get("model.name"),
                    "method": run.method,
                    "lora": run.uses_lora,
                    "seed": run.seed,
                    "items": which,
                    "final_accuracy": acc,
                    **stats,
                }
            )
            frames.append(
                frame.assign(
                    run=run.run_dir.name,
                    condition=run.condition,
                    items=which,
                    model=run.get("model.name"),
                    lora=run.uses_lora,
                )
            )
            trajectories[(run.run_dir.name, which)] = _bucket_trajectory(run, which, frame["bucket"].to_numpy())
    if not rows:
        raise DataError(
            "no usable runs: entropy analysis needs runs with data.source: chaosnli and dynamics"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    per_run = pd.DataFrame(rows)
    items = pd.concat(frames, ignore_index=True)
    per_condition, delta = _per_condition(items, per_run, n_boot, seed)
    return EntropyReport(
        per_run=per_run,
        per_condition=per_condition,
        delta=delta,
        lora_vs_full=_lora_vs_full(items, n_boot, seed),
        items=items,
        by_label=_by_label(items),
        trajectories=trajectories,
        notes=notes,
    )


def _by_label(items: pd.DataFrame) -> pd.DataFrame:
    """Entropy, AULC and Δℓ per majority label: exposes a model that learned only the label prior
    (then every item of the disfavoured class "un-learns", whatever its entropy)."""
    return (
        items.groupby(["condition", "items", "majority_label"], sort=False)
        .agg(
            n=("aulc", "size"),
            mean_entropy=("entropy", "mean"),
            mean_aulc=("aulc", "mean"),
            mean_unlearning=("unlearning", "mean"),
            frac_unlearned=("unlearning", lambda v: float((v > 0).mean())),
            final_accuracy=("final_correct", "mean"),
        )
        .reset_index()
    )


def _bucket_trajectory(run: RunInfo, which: str, buckets: np.ndarray) -> pd.DataFrame:
    """Mean loss per entropy bucket at each checkpoint (x in epochs): the un-learning picture."""
    dyn = run.dynamics
    loss = dyn.heldout().loss if which == "heldout" else dyn.checkpoint(labels=dyn.clean_labels).loss
    x = dyn.ckpt_step / int(dyn.arrays["steps_per_epoch"])
    return pd.DataFrame(
        {b: loss[:, buckets == b].mean(axis=1) if (buckets == b).any() else np.nan for b in BUCKETS},
        index=pd.Index(x, name="epoch"),
    )


def _seed_mean(items: pd.DataFrame) -> pd.DataFrame:
    keys = ["condition", "items", "uid"]
    return (
        items.groupby(keys, sort=False)
        .agg(
            entropy=("entropy", "first"),
            bucket=("bucket", "first"),
            text_words=("text_words", "first"),
            model=("model", "first"),
            lora=("lora", "first"),
            aulc=("aulc", "mean"),
            prior_loss=("prior_loss", "mean"),
            loss_initial=("loss_initial", "mean"),
            unlearning=("unlearning", "mean"),
            seeds=("run", "nunique"),
        )
        .reset_index()
    )


def _per_condition(
    items: pd.DataFrame, per_run: pd.DataFrame, n_boot: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    pooled = _seed_mean(items)
    rows, deltas = [], []
    for (cond, which), g in pooled.groupby(["condition", "items"], sort=False):
        stats = correlate(g["entropy"], g["aulc"], g[list(CONFOUNDERS)], n_boot=n_boot, seed=seed, extra=g[PRIOR])
        seeds = per_run[(per_run["condition"] == cond) & (per_run["items"] == which)]["rho"]
        lo, hi = PAPER_RHO_RANGE
        rows.append(
            {
                "condition": cond,
                "items": which,
                "model": g["model"].iloc[0],
                "lora": bool(g["lora"].iloc[0]),
                "runs": int(g["seeds"].max()),
                "rho_seed_mean": float(seeds.mean()),
                "rho_seed_std": float(seeds.std(ddof=1)) if len(seeds) > 1 else float("nan"),
                "rho_seed_min": float(seeds.min()),
                "rho_seed_max": float(seeds.max()),
                **stats,
                "in_paper_range": bool(lo <= stats["rho"] <= hi),
            }
        )
        d = delta_by_bucket(g["unlearning"].to_numpy(), g["bucket"].to_numpy(), order=BUCKETS).reset_index()
        pos = g.groupby("bucket")["unlearning"].apply(lambda s: float((s > 0).mean()))
        d["frac_unlearned"] = d["bucket"].map(pos)
        deltas.append(d.assign(condition=cond, items=which))
    delta = pd.concat(deltas, ignore_index=True)[
        ["condition", "items", "bucket", "count", "mean", "std", "sem", "frac_unlearned"]
    ]
    return pd.DataFrame(rows), delta


def _lora_vs_full(items: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per model and item set: Δℓ on contested items, each LoRA condition vs full fine-tuning, paired by item."""
    pooled = _seed_mean(items)
    pooled = pooled[pooled["bucket"] == "contested"]
    rows = []
    for (model, which), g in pooled.groupby(["model", "items"], sort=False):
        full = g[~g["lora"]]
        for cond_full, f in full.groupby("condition", sort=False):
            for cond_lora, lo in g[g["lora"]].groupby("condition", sort=False):
                both = lo.set_index("uid")[["unlearning"]].join(
                    f.set_index("uid")[["unlearning"]], how="inner", lsuffix="_lora", rsuffix="_full"
                )
                if both.empty:
                    continue
                diff = (both["unlearning_lora"] - both["unlearning_full"]).to_numpy()
                ci = _mean_ci(diff, n_boot, seed)
                rows.append(
                    {
                        "model": model,
                        "items": which,
                        "lora": cond_lora,
                        "full": cond_full,
                        "n_contested": len(both),
                        "delta_lora": float(both["unlearning_lora"].mean()),
                        "delta_full": float(both["unlearning_full"].mean()),
                        "frac_unlearned_lora": float((both["unlearning_lora"] > 0).mean()),
                        "frac_unlearned_full": float((both["unlearning_full"] > 0).mean()),
                        "diff": float(diff.mean()),
                        "diff_ci_low": ci[0],
                        "diff_ci_high": ci[1],
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "items",
            "lora",
            "full",
            "n_contested",
            "delta_lora",
            "delta_full",
            "frac_unlearned_lora",
            "frac_unlearned_full",
            "diff",
            "diff_ci_low",
            "diff_ci_high",
        ],
    )


def _mean_ci(values: np.ndarray, n_boot: int, seed: int, ci: float = 0.95) -> tuple[float, float]:
    if n_boot == 0 or len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    a = (1 - ci) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)
