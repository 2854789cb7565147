"""A dual-LoRA noisy-label detector **in the spirit of Delora** (Yuan, Chen & Zhang, "Weed Out, Then Harvest:
Dual Low-Rank Adaptation is an Effective Noisy Label Detector for Noise-Robust Learning", Findings of ACL
2025, arXiv 2510.10208).

Delora's idea, from its abstract: a *clean* LoRA is encouraged to memorise clean data and a *noisy* LoRA is
constrained to memorise mislabelled data, so the noisy LoRA acts as a **learnable threshold** for telling
clean from noisy samples, and sample selection is decoupled from training the final model. We have not
reimplemented the paper (its two adapters share one model and their updates are constrained during one
training; neither is done here). What this module does, with the runs kss already has:

1. **Warm-up selection**: the reference run's final loss on the given label (small loss); the top
   ``n_flag`` examples (the estimated noise count) are *suspected*, the rest *kept*.
2. **Clean LoRA**: a fresh adapter (the config's rank, seed and schedule) trained on the kept examples only.
3. **Noisy LoRA**: ``noisy_on="suspected"`` (default) — a fresh adapter trained on the suspected examples only,
   so it learns what the flipped labels look like (under asymmetric noise, the flip pattern); ``"all"`` —
   the reference run itself (every example, a model that has fitted as much noise as the config allows).
4. **Score** ``s_i = loss_i(clean LoRA) - loss_i(noisy LoRA)`` on every example's given label: high when
   the noisy LoRA explains the given label better than the clean one. **Flags**: with ``"suspected"``,
   ``s_i > 0`` (the noisy LoRA as the threshold, no noise-rate estimate needed); with ``"all"``, the top
   ``n_flag`` (the reference model fits clean examples too, so ``s_i > 0`` is no decision there).

Caveat: each model's loss is in-sample on the examples it trained on and out-of-sample on the others, so
``s`` mixes both; the selection of step 1 is therefore partly self-confirming (as in Delora's warm-up).
Cost: one extra run (``"all"``) or two (``"suspected"``) on top of the reference run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kss_lora.config import RunConfig

from . import scores as S
from .training import Trained, configure, train

__all__ = ["dual_lora_scores"]


def _example_loss(run: Any, labels: np.ndarray) -> np.ndarray:
    from kss_lora.dynamics.metrics import per_example_from_logits

    return per_example_from_logits(run.logits(run.full_train_batches), labels).loss


def dual_lora_scores(
    cfg: RunConfig,
    out: Path,
    labels: np.ndarray,
    reference_loss: np.ndarray,
    n_flag: int,
    *,
    prep: Callable[..., Any],
    record: Callable[[str, Trained], None],
    noisy_on: str = "suspected",
    epochs: int | None = None,
    eval_examples: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Scores (higher = more suspicious), flags and bookkeeping of the dual-LoRA detector.

    Args:
        cfg: the detection config; ``labels``: the given labels every run trains on (aligned with the split).
        reference_loss: the reference run's final eval-mode loss per example (the warm-up selection).
        n_flag: how many examples the warm-up suspects (the estimated noise count; at least 1 is used).
        prep: ``prep(cfg, **variant) -> Run`` (the pipeline's, which applies the given labels);
        record: ``record(name, trained)`` files a finished run with the pipeline.
        noisy_on: ``"suspected"`` or ``"all"`` (see the module docstring).
    """
    n = labels.size
    suspected = S.flag_top(reference_loss, count=min(max(int(n_flag), 1), n - 1))
    run_cfg = copy.deepcopy(configure(cfg, track=False))
    if epochs is not None:
        run_cfg.train.epochs = int(epochs)

    def fit(name: str, rows: np.ndarray) -> np.ndarray:
        run = prep(run_cfg, train_index=np.flatnonzero(rows), eval_examples=eval_examples)
        trained = train(run, out / name)
        t0 = time.perf_counter()
        loss = _example_loss(run, labels)
        trained.timing["score_s"] = time.perf_counter() - t0
        trained.timing["wall_s"] += trained.timing["score_s"]
        record(name, trained)
        return loss

    clean_loss = fit("dual-clean", ~suspected)
    if noisy_on == "suspected":
        noisy_loss = fit("dual-noisy", suspected)
    else:
        noisy_loss = np.asarray(reference_loss, dtype=np.float64)
    score = clean_loss - noisy_loss
    flags = score > 0.0 if noisy_on == "suspected" else S.flag_top(score, count=int(n_flag))
    extras = {
        "dual_lora_noisy_on": noisy_on,
        "dual_lora_suspected": int(suspected.sum()),
        "dual_lora_flagged": int(flags.sum()),
    }
    return score, flags, extras
