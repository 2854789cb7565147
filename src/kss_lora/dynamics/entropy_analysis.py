"""The annotation-entropy analysis (Steele): does a ChaosNLI item's annotation entropy predict how hard it is
to learn (AULC), and do contested items get "un-learned"? ``kss entropy`` runs it.

:func:`entropy_analysis` joins the AULC of ChaosNLI items (held-out and in-training) with their annotation
entropy across many runs and tests Steele's claim (Spearman rho 0.06-0.43, positive in all conditions; LoRA
"un-learns" contested items, full fine-tuning does not). :mod:`.entropy_report` writes it as Markdown.

A run counts only if it learned more than the label prior: its accuracy on the gate split (``validation``:
the held-out 20% of the ChaosNLI items against their majority label, Steele's validation set; or ``test``)
must beat that split's majority-class rate by at least ``gate_margin`` (10 points). Every run keeps its row
in ``per_run`` with ``counts`` saying whether it passed; the pooled tables and the verdicts
(:mod:`.entropy_verdicts`) use counted runs only. In-training items are the rows a study file marks
``tracked`` (:mod:`.entropy_data`); bulk rows are trained on but never analysed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import DataError

from .entropy import BUCKETS
from .metrics import ExampleOutputs, aulc, unlearning
from .runs import RunInfo, _resolve_data_path, chaosnli_items
from .stats import (
    PRIOR_MARGIN,
    beats_prior,
    delta_by_bucket,
    hierarchical_r2,
    majority_rate,
    partial_spearman,
    spearman_with_ci,
)

__all__ = [
    "CONFOUNDERS",
    "GATE_MARGIN",
    "GATE_SPLITS",
    "PAPER_RHO_RANGE",
    "PRIOR",
    "EntropyReport",
    "correlate",
    "entropy_analysis",
    "item_frame",
    "run_gate",
]

GATE_MARGIN = PRIOR_MARGIN
"""A run counts only if its gate-split accuracy beats the split's majority-class rate by this much."""
GATE_SPLITS = ("validation", "test")

PAPER_RHO_RANGE = (0.06, 0.43)
"""Steele's reported Spearman rho between annotation entropy and AULC, over 25 conditions."""


def item_frame(run: RunInfo, which: str) -> pd.DataFrame | None:
    """Per-item AULC, Δℓ and initial loss against ChaosNLI's majority label, joined with entropy.

    ``which`` is ``"heldout"`` (the ``tracking.heldout`` items, never trained on) or ``"train"`` (in-training
    items, scored against the *clean* majority label even if noise was injected; only the ``tracked`` rows of
    a study file, Steele's tracked items). None if not tracked.
    """
    got = _item_losses(run, which)
    return None if got is None else got[0]


def _item_losses(run: RunInfo, which: str) -> tuple[pd.DataFrame, np.ndarray] | None:
    """:func:`item_frame` and the items' ``[T, n]`` losses (for the per-bucket trajectories)."""
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
    if which == "train" and "role" in rows and (rows["role"] != "").any():
        keep = (rows["role"] == "tracked").to_numpy()  # bulk rows are trained on, not analysed
        if not keep.any():
            return None
        rows = rows[keep]
        out = ExampleOutputs(out.loss[:, keep], out.prob[:, keep], out.margin[:, keep], out.correct[:, keep])
    counts = dyn.arrays.get("train_class_counts")  # the whole training set's (tracking.train_role records fewer)
    if counts is None:
        counts = np.bincount(dyn.clean_labels, minlength=int(dyn.arrays["ckpt_logits"].shape[-1]))
    prior = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    majority = rows["majority_label"].to_numpy()
    frame = pd.DataFrame(
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
    return frame, out.loss


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
    LoRA vs full fine-tuning comparison on contested items, the items behind them (for plots) and the verdicts.

    ``per_run`` holds every run (``counts`` says whether it passed the accuracy gate); ``items``, the pooled
    tables and ``verdicts`` hold counted runs only."""

    per_run: pd.DataFrame
    per_condition: pd.DataFrame
    delta: pd.DataFrame
    lora_vs_full: pd.DataFrame
    items: pd.DataFrame
    by_label: pd.DataFrame = field(default_factory=pd.DataFrame)
    trajectories: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verdicts: list[Any] = field(default_factory=list)  # kss_lora.lab.verdicts.ClaimVerdict
    gate: dict[str, Any] = field(default_factory=dict)


CONFOUNDERS = ("text_words", "loss_initial")
PRIOR = "prior_loss"
"""-ln (training frequency of the item's majority label): the loss of a model that learned only the label
prior. A weakly trained model's AULC is mostly this, and contested items may have rarer majority labels,
so the report adds a partial rho that also controls for it."""

PER_RUN_FIRST = (
    "run",
    "condition",
    "model",
    "method",
    "lora_rank",
    "seed",
    "items",
    "val_accuracy",
    "majority_rate",
    "test_accuracy",
    "test_majority_rate",
    "gate_split",
    "gate_margin",
    "counts",
    "n",
    "rho",
    "p",
    "partial_rho",
)


def _split_labels(run: RunInfo, split: str) -> np.ndarray | None:
    """The labels the run was evaluated on for ``split`` ("validation", "test"), rebuilt from its data config
    (files, or the seeded split of the training file) exactly as the runner loaded them; None if unavailable."""
    from kss_lora.config import from_dict
    from kss_lora.data.loading import load_classification_data

    block = dict(run.get("data") or {})
    if split == "test" and not block.get("test"):
        return None
    for key in ("train", "validation", "test"):
        if block.get(key):
            path = _resolve_data_path(run, str(block[key]))
            if path is None:
                return None
            block[key] = str(path)
    try:
        data = load_classification_data(from_dict({"data": block}).data)
    except (DataError, ValueError, KeyError, OSError):
        return None
    part = data.validation if split == "validation" else data.test
    return None if part is None or len(part) == 0 else part.labels


def run_gate(run: RunInfo, *, split: str = "validation", margin: float = GATE_MARGIN) -> dict[str, Any]:
    """Validation and test accuracy of a run next to each split's majority-class rate, and whether the run
    counts: accuracy on ``split`` at least ``margin`` above that split's majority-class rate."""
    if split not in GATE_SPLITS:
        raise ValueError(f"split must be one of {GATE_SPLITS}, got {split!r}")
    result = run.result or {}
    out: dict[str, Any] = {}
    for name, prefix in (("validation", "val"), ("test", "test")):
        acc = result.get(f"{prefix}_accuracy")
        out[f"{prefix}_accuracy"] = float(acc) if acc is not None else float("nan")
        out["majority_rate" if name == "validation" else "test_majority_rate"] = majority_rate(_split_labels(run, name))
    key = "val" if split == "validation" else "test"
    acc, rate = out[f"{key}_accuracy"], out["majority_rate" if split == "validation" else "test_majority_rate"]
    out.update(gate_split=split, gate_margin=acc - rate, counts=beats_prior(acc, rate, margin))
    return out


def entropy_analysis(
    runs: Sequence[RunInfo],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    gate_split: str = "validation",
    gate_margin: float = GATE_MARGIN,
) -> EntropyReport:
    """Steele's analysis over runs trained on ChaosNLI (see the module docstring).

    Per run and item set (held-out, in-training): Spearman rho(H, AULC) with a bootstrap CI, partial rho
    controlling for text length and initial loss, ΔR², and the accuracy gate. Per condition (model, method,
    rank, lr; counted runs only, seeds pooled by averaging each item's AULC and Δℓ over seeds first): the same
    statistics, Δℓ per entropy bucket, and, per model, LoRA vs full fine-tuning on contested items (paired over
    items, bootstrap CI). Verdicts on the two claims from the counted runs (:mod:`.entropy_verdicts`).
    """
    from .entropy_verdicts import entropy_verdicts

    rows, frames, notes = [], [], []
    trajectories: dict[tuple[str, str], pd.DataFrame] = {}
    for run in runs:
        if not run.is_chaosnli:
            notes.append(f"skipped {run.run_dir.name}: data.source is {run.get('data.source')!r}, not chaosnli")
            continue
        if run.result is not None and run.result.get("status") not in (None, "ok"):
            notes.append(f"skipped {run.run_dir.name}: status {run.result.get('status')}")
            continue
        gate = run_gate(run, split=gate_split, margin=gate_margin)
        if not gate["counts"]:
            notes.append(
                f"{run.run_dir.name} does not count: {gate_split} accuracy {gate['gate_margin'] * 100:+.1f} points "
                f"from the majority-class rate (needs >= {gate_margin * 100:+.0f}); it learned little beyond the "
                "label prior"
            )
        for which in ("heldout", "train"):
            got = _item_losses(run, which)
            if got is None:
                continue
            frame, loss = got
            stats = correlate(
                frame["entropy"], frame["aulc"], frame[list(CONFOUNDERS)], n_boot=n_boot, seed=seed, extra=frame[PRIOR]
            )
            rows.append(
                {
                    "run": run.run_dir.name,
                    "condition": run.condition,
                    "model": run.get("model.name"),
                    "method": run.method,
                    "lora_rank": run.lora_rank,
                    "lora": run.uses_lora,
                    "seed": run.seed,
                    "items": which,
                    **gate,
                    "final_accuracy": float(frame["final_correct"].mean()),
                    **stats,
                }
            )
            if not gate["counts"]:
                continue
            frames.append(
                frame.assign(
                    run=run.run_dir.name,
                    condition=run.condition,
                    items=which,
                    model=run.get("model.name"),
                    lora=run.uses_lora,
                )
            )
            trajectories[(run.run_dir.name, which)] = _bucket_trajectory(run, frame, loss)
    if not rows:
        raise DataError(
            "no usable runs: entropy analysis needs runs with data.source: chaosnli and dynamics"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    per_run = pd.DataFrame(rows)
    per_run = per_run[[*PER_RUN_FIRST, *(c for c in per_run.columns if c not in PER_RUN_FIRST)]]
    per_run["lora_rank"] = per_run["lora_rank"].astype("Int64")
    counted = per_run[per_run["counts"]]
    gate = {"split": gate_split, "margin": gate_margin, "runs": int(per_run["run"].nunique())}
    gate["counted"] = int(counted["run"].nunique())
    if not frames:
        notes.append("no run passed the accuracy gate: no pooled tables and no verdicts beyond 'not measured'")
        empty = _empty_items()
        return EntropyReport(
            per_run=per_run,
            per_condition=pd.DataFrame(columns=PER_CONDITION_COLUMNS),
            delta=pd.DataFrame(columns=DELTA_COLUMNS),
            lora_vs_full=_lora_vs_full(empty, n_boot, seed),
            items=empty,
            notes=notes,
            verdicts=entropy_verdicts(counted, empty),
            gate=gate,
        )
    items = pd.concat(frames, ignore_index=True)
    per_condition, delta = _per_condition(items, counted, n_boot, seed)
    return EntropyReport(
        per_run=per_run,
        per_condition=per_condition,
        delta=delta,
        lora_vs_full=_lora_vs_full(items, n_boot, seed),
        items=items,
        by_label=_by_label(items),
        trajectories=trajectories,
        notes=notes,
        verdicts=entropy_verdicts(counted, items),
        gate=gate,
    )


ITEM_COLUMNS = (
    "uid",
    "entropy",
    "majority_label",
    "prior_loss",
    "bucket",
    "text_words",
    "aulc",
    "loss_initial",
    "unlearning",
    "final_correct",
    "run",
    "condition",
    "items",
    "model",
    "lora",
)
DELTA_COLUMNS = ("condition", "items", "bucket", "count", "mean", "std", "sem", "frac_unlearned")
PER_CONDITION_COLUMNS = ("condition", "items", "model", "lora", "runs", "rho_seed_mean", "rho", "in_paper_range")


def _empty_items() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=bool if c == "lora" else object) for c in ITEM_COLUMNS})


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


def _bucket_trajectory(run: RunInfo, frame: pd.DataFrame, loss: np.ndarray) -> pd.DataFrame:
    """Mean loss per entropy bucket at each checkpoint (x in epochs): the un-learning picture."""
    dyn = run.dynamics
    buckets = frame["bucket"].to_numpy()
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
    delta = pd.concat(deltas, ignore_index=True)[list(DELTA_COLUMNS)]
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
