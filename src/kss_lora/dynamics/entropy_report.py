"""The entropy analysis as Markdown: the verdicts, each condition's rho next to the paper's range, per-run rows
with the accuracy gate, Δℓ per entropy bucket, LoRA vs full fine-tuning on contested items, and the per-label
check of the label prior; :func:`claims_table` is the verdicts' machine-readable claims.csv."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..tables import MISSING, fmt_ci, fmt_num, fmt_p, markdown_table
from .entropy_analysis import PAPER_RHO_RANGE, EntropyReport

__all__ = ["claims_table", "entropy_markdown"]


def _item(x: Any) -> Any:
    """A numpy scalar (pandas rows hold them) as the Python number the table formatters take."""
    return x.item() if isinstance(x, np.generic) else x


def _num(x: Any, digits: int = 3) -> str:
    return fmt_num(_item(x), digits)


def _with_ci(value: Any, lo: Any, hi: Any) -> str:
    """``0.412 [0.301, 0.515]``; the value alone when the interval is unknown."""
    ci = fmt_ci(_item(lo), _item(hi), 3, signed=False)
    return _num(value) + ("" if ci == MISSING else f" {ci}")


def _section(title: str, rows: list[dict[str, Any]], text: str = "") -> list[str]:
    return ["", f"### {title}", "", *([text, ""] if text else []), markdown_table(rows)]


def claims_table(verdicts: Sequence[Any]) -> pd.DataFrame:
    """claims.csv: one row per comparison behind each verdict (kss_lora.lab.verdicts columns)."""
    from kss_lora.lab.verdicts import CLAIM_COLUMNS, EXTRA_COLUMNS

    rows = [row for v in verdicts for row in v.rows()]
    return pd.DataFrame(rows, columns=[*CLAIM_COLUMNS, *EXTRA_COLUMNS])


def entropy_markdown(report: EntropyReport) -> str:
    """Markdown tables: the verdicts, each condition's rho next to the paper's range, per-run rows with the
    accuracy gate, Δℓ per bucket, LoRA vs full fine-tuning on contested items."""
    lo, hi = PAPER_RHO_RANGE
    out = [f"Paper (Steele): Spearman ρ(H, AULC) = {lo}–{hi}, positive in all 25 conditions."]
    g = report.gate
    if g:
        out += [
            "",
            f"Accuracy gate: a run counts only if its {g['split']} accuracy beats that split's majority-class rate by "
            f"at least {g['margin'] * 100:.0f} points; {g['counted']} of {g['runs']} runs count. Pooled tables and "
            "verdicts use counted runs only (a run is the unit: n >= 3 counted runs per arm, else 'too few runs').",
        ]
    if report.verdicts:
        rows = [
            {"claim": v.text, "published": v.published, "measured here": v.measured, "verdict": v.verdict}
            for v in report.verdicts
        ]
        out += _section("Verdicts (claims.csv has every comparison)", rows)
    per_condition = [
        {
            "condition": r.condition,
            "items": r.items,
            "runs": r.runs,
            "n": r.n,
            "ρ [95% CI]": _with_ci(r.rho, r.ci_low, r.ci_high),
            "per-seed ρ mean ± sd": f"{_num(r.rho_seed_mean)} ± {_num(r.rho_seed_std)}",
            "partial ρ": f"{_num(r.partial_rho)} (p={fmt_p(_item(r.partial_p))})",
            "partial ρ + prior": f"{_num(r.partial_rho_extra)} (p={fmt_p(_item(r.partial_p_extra))})",
            "ΔR²": _num(r.delta_r2, 4),
            "paper": f"{lo}–{hi}",
            "in range": "yes" if r.in_paper_range else "no",
        }
        for r in report.per_condition.itertuples()
    ]
    out += _section(
        "Per condition (seeds pooled: each item's AULC averaged over seeds)",
        per_condition,
        "Partial ρ controls for text length and initial loss (Steele's confounders); partial ρ + prior also "
        "controls for −ln(training frequency of the majority label), the loss of a model that learned only "
        "the label prior. ΔR²: rank variance of AULC explained by entropy beyond length and initial loss.",
    )
    per_run = [
        {
            "run": r.run,
            "condition": r.condition,
            "seed": r.seed,
            "items": r.items,
            "n": r.n,
            "val acc / majority": f"{_num(r.val_accuracy)} / {_num(r.majority_rate)}",
            "test acc / majority": f"{_num(r.test_accuracy)} / {_num(r.test_majority_rate)}",
            "counts": "yes" if r.counts else "no",
            "acc on items": _num(r.final_accuracy),
            "ρ [95% CI]": _with_ci(r.rho, r.ci_low, r.ci_high),
            "p": fmt_p(_item(r.p)),
            "partial ρ [95% CI]": _with_ci(r.partial_rho, r.partial_ci_low, r.partial_ci_high),
        }
        for r in report.per_run.itertuples()
    ]
    out += _section("Per run (every run; 'counts' = passed the accuracy gate)", per_run)
    delta = [
        {
            "condition": r.condition,
            "items": r.items,
            "bucket": r.bucket,
            "n": r.count,
            "Δℓ": _num(r.mean),
            "sem": _num(r.sem),
            "share un-learned": _num(r.frac_unlearned, 2),
        }
        for r in report.delta.itertuples()
    ]
    out += _section(
        "Un-learning Δℓ = loss_final − loss_initial per entropy bucket (mean ± sem; share with Δℓ > 0)", delta
    )
    if not report.lora_vs_full.empty:
        rows = [
            {
                "model": r.model,
                "items": r.items,
                "LoRA": r.lora,
                "full FT": r.full,
                "n": r.n_contested,
                "Δℓ LoRA": _num(r.delta_lora),
                "Δℓ full": _num(r.delta_full),
                "share un-learned LoRA / full": f"{_num(r.frac_unlearned_lora, 2)} / {_num(r.frac_unlearned_full, 2)}",
                "diff [95% CI]": _with_ci(r.diff, r.diff_ci_low, r.diff_ci_high),
            }
            for r in report.lora_vs_full.itertuples()
        ]
        out += _section(
            "Contested items: LoRA vs full fine-tuning (paired by item; bootstrap 95% CI of the mean difference)", rows
        )
    if not report.by_label.empty:
        rows = [
            {
                "condition": r.condition,
                "items": r.items,
                "majority label": r.majority_label,
                "n": r.n,
                "mean H": _num(r.mean_entropy),
                "mean AULC": _num(r.mean_aulc),
                "Δℓ": _num(r.mean_unlearning),
                "share un-learned": _num(r.frac_unlearned, 2),
                "final acc": _num(r.final_accuracy, 2),
            }
            for r in report.by_label.itertuples()
        ]
        out += _section("Per majority label (all seeds' items pooled): does the label prior drive it?", rows)
    if report.notes:
        out += ["", *(f"- {n}" for n in report.notes)]
    return "\n".join(out) + "\n"
