"""The few lines ``kss run`` ends with for a person (the JSON line on stdout stays for scripts).

Losses are mean cross-entropy in nats; the gap is validation loss minus training loss (the training loss
measured in eval mode on the labels trained on), so a large positive gap means the model fits its training
data much better than unseen data. The thresholds below only choose the words, not any verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tables import MISSING, fmt_num

__all__ = ["gap_meaning", "human_summary"]

# Gap (nats) above which the words say "overfitting" / "mild overfitting"; below -SAME, "validation fits better".
OVERFIT_NATS = 0.2
SAME_NATS = 0.05


def gap_meaning(gap: Any) -> str:
    """One phrase saying what a gap (nats) means."""
    if fmt_num(gap) == MISSING:
        return "no gap measured"
    if gap > OVERFIT_NATS:
        return "the model fits training data much better than validation (overfitting)"
    if gap > SAME_NATS:
        return "the model fits training data somewhat better than validation (mild overfitting)"
    if gap >= -SAME_NATS:
        return "training and validation data are fitted alike (no sign of overfitting)"
    return "validation is fitted better than training data (unusual: label noise on the training set, or a split issue)"


def human_summary(result: dict[str, Any], run_dir: str | Path, *, task: str = "classification") -> str:
    """Run directory, status, accuracies (perplexity for causal-LM), losses, the gap and what it means."""
    lines = [f"run directory: {run_dir}"]
    wall = result.get("wall_time_s")
    took = f" in {wall:.0f} s" if isinstance(wall, (int, float)) else ""
    if result.get("status") != "ok":
        lines.append(f"status {result.get('status')}{took} (the reason is in its result.json and error.log)")
        return "\n".join(lines)
    lines.append(f"status ok: {result.get('epochs')} epochs{took}")
    if task == "causal-lm":
        lines.append(f"perplexity: val {fmt_num(result.get('val_perplexity'), 2)}")
    else:
        acc = ", ".join(f"{s} {fmt_num(result.get(f'{s}_accuracy'), 3)}" for s in ("train", "val", "test"))
        lines.append(f"accuracy: {acc}")
    loss = ", ".join(f"{s} {fmt_num(result.get(f'{s}_loss'), 3)}" for s in ("train", "val", "test"))
    lines.append(f"loss (nats): {loss}")
    gap = result.get("gap")
    lines.append(f"gap {fmt_num(gap, 2)} nats (val − train loss): {gap_meaning(gap)}")
    if (result.get("noise_rate") or 0) > 0 and fmt_num(result.get("gap_clean")) != MISSING:
        clean = result["gap_clean"]
        lines.append(f"gap_clean {fmt_num(clean, 2)} nats (against the true labels): {gap_meaning(clean)}")
    return "\n".join(lines)
