"""Verdicts on Steele's two annotation-entropy claims, through :mod:`kss_lora.lab.verdicts` (docs/spec.md §5).

Only runs that passed the accuracy gate count (:mod:`.entropy_analysis`); a run is the unit, so a claim
needs at least 3 counted runs per arm, else ``too few runs``.

- ``entropy_rho_positive``: "Spearman rho(H, AULC) is positive in all conditions". One comparison per
  condition (model, method, rank, lr): the per-run rho on the tracked in-training items, one-sample t against
  0, one-sided (greater). A family over the conditions (Holm); the claim holds only if every condition holds
  (:func:`~kss_lora.lab.verdicts.combine`).
- ``lora_unlearns_contested``: "LoRA un-learns contested items, full fine-tuning does not". Per LoRA
  condition: (a) the per-run mean Δℓ = loss_final − loss_initial of the contested tracked items is above 0
  (one-sample t), and (b) it is above full fine-tuning's of the same model (Welch t, one-sided). One family;
  every part must hold.
"""

from __future__ import annotations

import math

import pandas as pd

from kss_lora.lab.verdicts import (
    NOT_MEASURED,
    ClaimVerdict,
    Comparison,
    combine,
    compare,
    compare_to_value,
    judge_family,
)

__all__ = ["CLAIM_RHO", "CLAIM_UNLEARN", "contested_delta_per_run", "entropy_verdicts", "verdict_runs"]

RHO_METRIC = "rho (tracked items)"
DELTA_METRIC = "mean Δℓ of contested tracked items"
CLAIM_RHO = "entropy_rho_positive"
CLAIM_UNLEARN = "lora_unlearns_contested"
ITEMS = "train"
"""The item set the claims are about: the tracked items, in the training set (Steele's protocol)."""


def contested_delta_per_run(items: pd.DataFrame) -> pd.DataFrame:
    """Per counted run: the mean Δℓ of its contested tracked items, with the run's condition, model and lora flag."""
    sel = items[(items["items"] == ITEMS) & (items["bucket"] == "contested")]
    if sel.empty:
        return pd.DataFrame(columns=["run", "condition", "model", "lora", "delta_contested"])
    return (
        sel.groupby("run", sort=False)
        .agg(
            condition=("condition", "first"),
            model=("model", "first"),
            lora=("lora", "first"),
            delta_contested=("unlearning", "mean"),
        )
        .reset_index()
    )


def _effect(c: Comparison) -> str:
    """``+0.126 [+0.065, +0.175]``; the interval left out when it is undefined (fewer than 2 runs)."""
    ci = f" [{c.ci_low:+.3f}, {c.ci_high:+.3f}]" if math.isfinite(c.ci_low) and math.isfinite(c.ci_high) else ""
    return f"{c.effect:+.3f}{ci}"


def _fmt(c: Comparison) -> str:
    n = f"n={c.n_treatment}" + (f"/{c.n_control}" if c.control else "")
    name = f"{c.treatment} − {c.control}" if c.control else c.treatment
    return f"{name}: {_effect(c)} ({n}, {c.verdict})"


def _rho_claim(per_run: pd.DataFrame) -> ClaimVerdict:
    rows = per_run[per_run["items"] == ITEMS]
    text = "Spearman ρ(annotation entropy, AULC) is positive in all conditions"
    published = "ρ = 0.06–0.43, positive in all 25 conditions (4 encoders + 2 decoders, SNLI/MNLI)"
    if rows.empty:
        return ClaimVerdict(CLAIM_RHO, text, published, "no run passed the accuracy gate", NOT_MEASURED)
    comps = [
        compare_to_value(g["rho"], claim=CLAIM_RHO, metric=RHO_METRIC, label=cond, value=0.0, direction="greater")
        for cond, g in rows.groupby("condition", sort=True)
    ]
    judged = judge_family(comps)
    verdict = combine([c.verdict for c in judged], expected=len(judged))
    return ClaimVerdict(CLAIM_RHO, text, published, "; ".join(_fmt(c) for c in judged), verdict, comparisons=judged)


def _unlearn_claim(items: pd.DataFrame) -> ClaimVerdict:
    text = "LoRA un-learns contested items (Δℓ > 0); full fine-tuning does not (LoRA's Δℓ above full FT's)"
    published = "LoRA's loss on contested items rises during training; largely absent under full fine-tuning"
    delta = contested_delta_per_run(items)
    lora = delta[delta["lora"].astype(bool)]
    if lora.empty:
        return ClaimVerdict(CLAIM_UNLEARN, text, published, "no LoRA run passed the accuracy gate", NOT_MEASURED)
    comps: list[Comparison] = []
    for cond, g in lora.groupby("condition", sort=True):
        comps.append(
            compare_to_value(
                g["delta_contested"],
                claim=CLAIM_UNLEARN,
                metric=DELTA_METRIC,
                label=cond,
                value=0.0,
                direction="greater",
            )
        )
        full = delta[(~delta["lora"].astype(bool)) & (delta["model"] == g["model"].iloc[0])]
        for cond_full, f in full.groupby("condition", sort=True):
            comps.append(
                compare(
                    g["delta_contested"],
                    f["delta_contested"],
                    claim=CLAIM_UNLEARN,
                    metric=DELTA_METRIC,
                    treatment_label=cond,
                    control_label=cond_full,
                    direction="greater",
                )
            )
    judged = judge_family(comps)
    with_full = sum(1 for c in judged if c.control)
    # every LoRA condition has two parts; a missing full fine-tuning arm leaves the claim unjudged
    verdict = combine([c.verdict for c in judged], expected=2 * lora["condition"].nunique())
    measured = "; ".join(_fmt(c) for c in judged)
    note = "" if with_full else "no full fine-tuning run passed the gate: the contrast is not measured"
    return ClaimVerdict(CLAIM_UNLEARN, text, published, measured, verdict, note=note, comparisons=judged)


def entropy_verdicts(per_run: pd.DataFrame, items: pd.DataFrame) -> list[ClaimVerdict]:
    """Both claims judged from the counted runs' per-run rows and items (see the module docstring)."""
    return [_rho_claim(per_run), _unlearn_claim(items)]


def verdict_runs(per_run: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """runs.csv beside claims.csv: one row per run with the two metrics the verdicts test, so every claims.csv
    row can be recomputed from it (docs/spec.md §5). ``status`` is ``ok`` for counted runs, ``not counted``
    for runs that failed the accuracy gate (their metrics are left out: the verdicts do not use them)."""
    rows = per_run[per_run["items"] == ITEMS]
    delta = contested_delta_per_run(items).set_index("run")["delta_contested"]
    out = pd.DataFrame(
        {
            "run": rows["run"],
            "condition": rows["condition"],
            "model": rows["model"],
            "method": rows["method"],
            "lora_rank": rows["lora_rank"],
            "seed": rows["seed"],
            "status": ["ok" if c else "not counted" for c in rows["counts"]],
            "val_accuracy": rows["val_accuracy"],
            "majority_rate": rows["majority_rate"],
            "gate_margin": rows["gate_margin"],
            RHO_METRIC: rows["rho"].where(rows["counts"]),
            DELTA_METRIC: rows["run"].map(delta),
        }
    )
    return out.reset_index(drop=True)
