"""Per-example tables of one run (AULC, learning time, un-learning, cartography, forgetting, AUM), and the
clean-vs-noisy separation over time. ``kss dynamics`` writes them.

Time axes, and why they differ: AULC, learning time and un-learning use *every* checkpoint (step 0, every
``tracking.every_steps`` and each epoch end), as Steele's protocol does; cartography, forgetting events
and AUM are defined over *epochs* (Swayamdipta et al.; Toneva et al.; Pleiss et al.), so they use the
epoch-end checkpoints only. With ``source='free'`` every quantity uses the per-epoch training-pass
outputs (no extra compute, but dropout/mask noise and a different step per example).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kss_lora.errors import ConfigError

from .capacity import TemporalSeparation, temporal_separation
from .metrics import (
    LN2,
    ExampleOutputs,
    aulc,
    aum,
    cartography,
    forgetting_events,
    learning_time,
    per_example_from_logits,
    unlearning,
)
from .records import Dynamics
from .runs import RunInfo, chaosnli_items

__all__ = ["SOURCES", "per_epoch_heldout", "run_separation", "run_tables"]

SOURCES = ("checkpoint", "free")
"""Where a run's per-example outputs come from: eval-mode checkpoints, or the training pass itself."""


def _outputs(run: RunInfo, source: str) -> tuple[ExampleOutputs, ExampleOutputs, np.ndarray]:
    """(outputs at every time point, outputs at epoch ends, time points in epochs) for the training items,
    against the labels trained on."""
    dyn = run.dynamics
    if source not in SOURCES:
        raise ConfigError("--source", f"unknown value {source!r}; allowed: {', '.join(SOURCES)}")
    if source == "free":
        try:
            free = dyn.free()
        except ValueError as exc:  # Dynamics.free raises ValueError when nothing was recorded
            raise ConfigError("--source", f"free: {exc}") from None
        return free, free, np.arange(1, free.loss.shape[0] + 1, dtype=float)
    spe = int(dyn.arrays["steps_per_epoch"])
    return dyn.checkpoint(), dyn.checkpoint(epochs_only=True), dyn.ckpt_step / spe


def _metric_columns(
    every: ExampleOutputs, epochs: ExampleOutputs, steps: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    lt = learning_time(every.loss, threshold=threshold)
    carto = cartography(epochs.prob, epochs.correct)
    fe = forgetting_events(epochs.correct)
    return {
        "aulc": aulc(every.loss),
        "loss_initial": every.loss[0],
        "loss_final": every.loss[-1],
        "unlearning": unlearning(every.loss),
        "learning_time": lt,
        "learning_step": np.where(lt >= 0, steps[np.maximum(lt, 0)], -1),
        "learning_time_persistent": learning_time(every.loss, threshold=threshold, persistent=True),
        "confidence": carto.confidence,
        "variability": carto.variability,
        "correctness": carto.correctness,
        "forgetting_events": fe.counts,
        "never_learned": fe.never_learned,
        "aum": aum(epochs.margin),
    }


def run_tables(
    run: RunInfo, *, source: str = "checkpoint", threshold: float = LN2, with_entropy: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per-example tables ``(training items, held-out items or None)`` of one run.

    Metrics are against the label *trained on* (the noisy one where noise was injected): that is what
    the model was asked to fit, and what AUM/forgetting use to flag mislabelled items. Held-out items are
    always read from the eval-mode checkpoints (the training pass never sees them). For a ChaosNLI run the
    item's ``uid``, ``entropy_nats``, ``bucket`` and ``text_words`` are joined when the data file is found.
    """
    dyn = run.dynamics
    every, epochs, _ = _outputs(run, source)
    spe = int(dyn.arrays["steps_per_epoch"])
    steps = dyn.ckpt_step if source == "checkpoint" else spe * np.arange(1, every.loss.shape[0] + 1)
    noisy = dyn.is_noisy if dyn.is_noisy is not None else np.zeros(len(dyn.labels), bool)
    train = pd.DataFrame(
        {"id": dyn.arrays["ids"], "label": dyn.labels, "clean_label": dyn.clean_labels, "is_noisy": noisy.astype(bool)}
    )
    for key, value in _metric_columns(every, epochs, steps, threshold).items():
        train[key] = value
    heldout = None
    held = dyn.heldout()
    if held is not None:
        held_epochs = per_epoch_heldout(dyn)
        heldout = pd.DataFrame({"id": dyn.arrays["heldout_ids"], "label": dyn.arrays["heldout_labels"]})
        for key, value in _metric_columns(held, held_epochs, dyn.ckpt_step, threshold).items():
            heldout[key] = value
    if with_entropy and run.is_chaosnli:
        train = _join_items(train, chaosnli_items(run, "train", required=False))
        if heldout is not None:
            heldout = _join_items(heldout, chaosnli_items(run, "heldout", required=False))
    return train, heldout


def per_epoch_heldout(dyn: Dynamics) -> ExampleOutputs:
    """Held-out outputs at the epoch-end checkpoints (the cartography/AUM time axis)."""
    logits = dyn.arrays["heldout_logits"][dyn.epoch_end]
    return per_example_from_logits(logits, np.broadcast_to(dyn.arrays["heldout_labels"], logits.shape[:2]))


def _join_items(table: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    if items is None:
        return table
    cols = ["uid", "entropy_nats", "bucket", "text_words"]
    extra = items.iloc[table["id"].to_numpy()][cols].reset_index(drop=True)
    return pd.concat([table.reset_index(drop=True), extra], axis=1)


def run_separation(run: RunInfo, source: str = "checkpoint") -> tuple[TemporalSeparation, np.ndarray] | None:
    """Clean vs noisy fitted fractions over time (x in epochs), or None when no noise was injected."""
    dyn = run.dynamics
    if dyn.is_noisy is None or dyn.is_noisy.all() or not dyn.is_noisy.any():
        return None
    every, _, x = _outputs(run, source)
    return temporal_separation(every.correct, dyn.is_noisy), x
