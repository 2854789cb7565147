"""The entropy analysis as Markdown: each condition's rho next to the paper's range, per-run rows, Δℓ per
entropy bucket, LoRA vs full fine-tuning on contested items, and the per-label check of the label prior."""

from __future__ import annotations

import math
from typing import Any

from .entropy_analysis import PAPER_RHO_RANGE, EntropyReport

__all__ = ["entropy_markdown"]


def _f(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def entropy_markdown(report: EntropyReport) -> str:
    """Markdown tables: each condition's rho next to the paper's range, per-run rows, Δℓ per bucket,
    LoRA vs full fine-tuning on contested items."""
    lo, hi = PAPER_RHO_RANGE
    out = [
        f"Paper (Steele): Spearman ρ(H, AULC) = {lo}–{hi}, positive in all 25 conditions.",
        "",
        "### Per condition (seeds pooled: each item's AULC averaged over seeds)",
        "",
        "Partial ρ controls for text length and initial loss (Steele's confounders); partial ρ + prior also "
        "controls for −ln(training frequency of the majority label), the loss of a model that learned only "
        "the label prior. ΔR²: rank variance of AULC explained by entropy beyond length and initial loss.",
        "",
        "| condition | items | runs | n | ρ [95% CI] | per-seed ρ mean ± sd | partial ρ | partial ρ + prior "
        "| ΔR² | paper | in range |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.per_condition.itertuples():
        out.append(
            f"| {r.condition} | {r.items} | {r.runs} | {r.n} | {_f(r.rho)} [{_f(r.ci_low)}, {_f(r.ci_high)}] "
            f"| {_f(r.rho_seed_mean)} ± {_f(r.rho_seed_std)} | {_f(r.partial_rho)} (p={r.partial_p:.2g}) "
            f"| {_f(r.partial_rho_extra)} (p={r.partial_p_extra:.2g}) "
            f"| {_f(r.delta_r2, 4)} | {lo}–{hi} | {'yes' if r.in_paper_range else 'no'} |"
        )
    out += [
        "",
        "### Per run",
        "",
        "| run | condition | seed | items | n | final acc | ρ [95% CI] | p | partial ρ [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.per_run.itertuples():
        out.append(
            f"| {r.run} | {r.condition} | {r.seed} | {r.items} | {r.n} | {_f(r.final_accuracy)} "
            f"| {_f(r.rho)} [{_f(r.ci_low)}, {_f(r.ci_high)}] | {r.p:.2g} "
            f"| {_f(r.partial_rho)} [{_f(r.partial_ci_low)}, {_f(r.partial_ci_high)}] |"
        )
    out += [
        "",
        "### Un-learning Δℓ = loss_final − loss_initial per entropy bucket (mean ± sem; share with Δℓ > 0)",
        "",
        "| condition | items | bucket | n | Δℓ | sem | share un-learned |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.delta.itertuples():
        out.append(
            f"| {r.condition} | {r.items} | {r.bucket} | {r.count} | {_f(r.mean)} | {_f(r.sem)} "
            f"| {_f(r.frac_unlearned, 2)} |"
        )
    if not report.lora_vs_full.empty:
        out += [
            "",
            "### Contested items: LoRA vs full fine-tuning (paired by item; bootstrap 95% CI of the mean difference)",
            "",
            "| model | items | LoRA | full FT | n | Δℓ LoRA | Δℓ full | share un-learned LoRA / full | diff [95% CI] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report.lora_vs_full.itertuples():
            out.append(
                f"| {r.model} | {r.items} | {r.lora} | {r.full} | {r.n_contested} | {_f(r.delta_lora)} "
                f"| {_f(r.delta_full)} | {_f(r.frac_unlearned_lora, 2)} / {_f(r.frac_unlearned_full, 2)} "
                f"| {_f(r.diff)} [{_f(r.diff_ci_low)}, {_f(r.diff_ci_high)}] |"
            )
    if not report.by_label.empty:
        out += [
            "",
            "### Per majority label (all seeds' items pooled): does the label prior drive it?",
            "",
            "| condition | items | majority label | n | mean H | mean AULC | Δℓ | share un-learned | final acc |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report.by_label.itertuples():
            out.append(
                f"| {r.condition} | {r.items} | {r.majority_label} | {r.n} | {_f(r.mean_entropy)} "
                f"| {_f(r.mean_aulc)} | {_f(r.mean_unlearning)} | {_f(r.frac_unlearned, 2)} "
                f"| {_f(r.final_accuracy, 2)} |"
            )
    if report.notes:
        out += ["", *(f"- {n}" for n in report.notes)]
    return "\n".join(out) + "\n"
