"""Per-example label-noise scores: arrays in, one score per example out, **higher = more suspicious**.

Why pure functions: a detector is a way of reading numbers a training run already produced (loss,
p(label), margin and correctness trajectories ``[T checkpoints, N examples]``, or out-of-sample
probabilities ``[N, K]``). Keeping the reading separate from the training makes each detector testable on
synthetic trajectories in milliseconds and lets the same run feed every detector.

Flags (the boolean "this label is wrong" decision) are separate too: :func:`flag_top` flags a fraction of
the highest scores (the fraction usually comes from :mod:`kss_lora.detect.estimate`), and detectors with a
threshold of their own (AUM threshold samples, cartography's hard-to-learn region, confident learning)
expose it here.

Detectors:

- ``small_loss_scores``: loss on the given label, final or mean over checkpoints (Arpit et al. 2017;
  co-teaching's small-loss trick reversed).
- ``aulc_scores``: area under the loss curve (docs/spec.md §2): examples learned late or never score high.
- ``aum_scores`` / ``aum_threshold``: negated area under the margin, with the threshold-sample rule of
  Pleiss et al. 2020.
- ``cartography_scores`` / ``hard_to_learn``: dataset cartography (Swayamdipta et al. 2020).
- ``forgetting_scores``: forgetting events (Toneva et al. 2019), never-learned examples first.
- ``self_confidence_scores``: ``1 - p(given label)`` from out-of-sample probabilities (confident learning's
  ranking; the flags come from ``cleanlab.filter.find_label_issues``).
- ``rank_discrepancy_scores``: RACT as reconstructed in docs/spec.md §2 (see its docstring: the published
  algorithm is not public; this is our reading of it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kss_lora.dynamics.metrics import aulc, aum, cartography, forgetting_events
from kss_lora.errors import ConfigError, DataError

__all__ = [
    "aulc_scores",
    "aum_scores",
    "aum_threshold",
    "cartography_scores",
    "flag_top",
    "forgetting_scores",
    "hard_to_learn",
    "rank_discrepancy_scores",
    "self_confidence_scores",
    "single_run_scores",
    "small_loss_scores",
]

REDUCTIONS = ("final", "mean")
SINGLE_RUN = ("small-loss", "aulc", "cartography", "forgetting")  # the detectors one run's trajectories feed


def _as_traj(name: str, values: Any) -> np.ndarray:
    """Accept ``[T, N]`` trajectories or a single ``[N]`` snapshot (treated as T = 1)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise DataError(f"{name} must be [checkpoints, examples] or [examples], got shape {np.shape(values)}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or inf")
    return arr


def small_loss_scores(losses: Any, *, reduce: str = "final") -> np.ndarray:
    """Loss on the given label: the final checkpoint's (``reduce="final"``) or the mean (``"mean"``).

    Why both: the final loss is what a model that has started memorising noise *still* fails on; the mean
    also remembers that a noisy example was fitted late. ``"mean"`` equals :func:`aulc_scores`.
    """
    arr = _as_traj("losses", losses)
    if reduce not in REDUCTIONS:
        raise ConfigError("reduce", f"must be one of {REDUCTIONS}, got {reduce!r}")
    return arr[-1].copy() if reduce == "final" else aulc(arr)


def aulc_scores(losses: Any) -> np.ndarray:
    """AULC_i = mean over checkpoints of the loss on the given label (docs/spec.md §2)."""
    return aulc(_as_traj("losses", losses))


def aum_scores(margins: Any) -> np.ndarray:
    """Negated area under the margin (Pleiss et al. 2020), so that higher = more suspicious.

    ``margins`` are ``z_y - max_{k != y} z_k`` on the given label at each checkpoint (the paper averages
    over epochs). A mislabelled example's margin stays negative: the network keeps preferring its true class.
    """
    return -aum(_as_traj("margins", margins))


def aum_threshold(threshold_sample_scores: Any, *, percentile: float = 99.0) -> float:
    """Score threshold from threshold samples (Pleiss et al. 2020, §3.2), in :func:`aum_scores` units.

    Threshold samples are examples deliberately given a fresh, non-existent class: they are mislabelled by
    construction, so their AUM shows how a *certainly* mislabelled example behaves. The paper flags an
    example whose AUM is at or below the 99th percentile of the threshold samples' AUMs. In negated units
    that is ``score >= percentile(scores_of_threshold_samples, 100 - percentile)``.
    """
    s = np.asarray(threshold_sample_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError("aum_threshold needs at least one threshold sample")
    if not 0.0 < percentile <= 100.0:
        raise ConfigError("percentile", f"must be in (0, 100], got {percentile}")
    return float(np.percentile(s, 100.0 - percentile))


def cartography_scores(probs: Any, correct: Any) -> np.ndarray:
    """``1 - confidence``: the distance from the easy-to-learn corner of the cartography map.

    Swayamdipta et al. (2020, §5) find mislabelled examples in the hard-to-learn region (low confidence,
    low variability) and rank them by confidence. Low *variability* separates hard-to-learn from
    ambiguous examples but does not rank within the region, so we rank by confidence alone and offer the
    region itself as :func:`hard_to_learn` flags.
    """
    p = _as_traj("probs", probs)
    c = np.asarray(correct)
    c = c[None, :] if c.ndim == 1 else c
    carto = cartography(p, c)
    return 1.0 - carto.confidence


def hard_to_learn(probs: Any, correct: Any, *, confidence: float = 0.5, variability: float | None = None) -> np.ndarray:
    """Boolean flags of the hard-to-learn region: mean p(y) below ``confidence`` and std p(y) below
    ``variability`` (default: the median variability, a scale-free cut since variability's range
    depends on the number of checkpoints)."""
    p = _as_traj("probs", probs)
    c = np.asarray(correct)
    c = c[None, :] if c.ndim == 1 else c
    carto = cartography(p, c)
    v = float(np.median(carto.variability)) if variability is None else float(variability)
    return (carto.confidence < confidence) & (carto.variability <= v)


def forgetting_scores(correct: Any) -> np.ndarray:
    """Forgetting events per example, never-learned examples ranked above all (Toneva et al. 2019).

    The paper treats never-learned examples as "infinitely forgotten". Counts are small integers, so many
    examples tie; ties are broken by the fraction of checkpoints at which the example was wrong (a value in
    [0, 1), from the same correctness trajectory), which keeps top-k selection deterministic.
    """
    c = np.asarray(correct)
    c = c[None, :] if c.ndim == 1 else c
    fe = forgetting_events(c)
    wrong = 1.0 - c.astype(np.float64).mean(axis=0)
    top = float(c.shape[0] + 1)  # above any possible count
    return np.where(fe.never_learned, top, fe.counts.astype(np.float64)) + np.minimum(wrong, 1.0 - 1e-9)


def self_confidence_scores(labels: Any, pred_probs: Any) -> np.ndarray:
    """``1 - p(given label)`` from out-of-sample probabilities ``[N, K]`` (cleanlab's self-confidence).

    Only meaningful when no model that produced ``pred_probs[i]`` saw example ``i`` in training: in-sample
    probabilities of a model that memorised a noisy label make it look clean.
    """
    p = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise DataError(f"pred_probs must be [N, K] with N = len(labels), got {p.shape} for {y.shape[0]} labels")
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= p.shape[1])):
        raise DataError(f"labels must be integer classes in [0, {p.shape[1]})")
    return 1.0 - p[np.arange(y.size), y]


def rank_discrepancy_scores(low_losses: Any, high_losses: Any, *, reduce: str = "mean") -> np.ndarray:
    """RACT rank-discrepancy score ``d_i = L_i(low rank) - L_i(high rank)`` (**a reconstruction**).

    Steele's "Why LoRA Resists Label Noise" names RACT (Rank-Aware Curriculum Training) and says it
    "leverages rank discrepancy for noise detection"; the algorithm is not public. docs/spec.md §2 reconstructs it:
    a low-rank adapter lacks the capacity (``r (d + k - r)`` degrees of freedom) to fit flipped labels,
    a high-rank adapter can, so an example whose loss only the high-rank model drives down is suspicious.
    ``reduce="mean"`` uses AULC (mean loss over checkpoints, SPEC's form), ``"final"`` the last checkpoint.

    Caveat, measured rather than assumed (see docs/detection.md): the discrepancy is large only where the
    high-rank model *has* memorised the noise. Early in training, or with few steps, neither model fits
    noisy labels and ``d`` is near zero for them while hard clean examples (fitted by the high-rank model
    only) score high. Both trajectories must come from runs on the same labels and checkpoint grid.
    """
    lo = _as_traj("low_losses", low_losses)
    hi = _as_traj("high_losses", high_losses)
    if lo.shape[1] != hi.shape[1]:
        raise DataError(f"low and high trajectories cover different examples: {lo.shape[1]} vs {hi.shape[1]}")
    return small_loss_scores(lo, reduce=reduce) - small_loss_scores(hi, reduce=reduce)


def single_run_scores(losses: Any, probs: Any, correct: Any, *, detectors: Any = SINGLE_RUN) -> dict[str, np.ndarray]:
    """The one-run detectors of ``detectors`` (a subset of :data:`SINGLE_RUN`) from one run's eval-mode
    trajectories ``[T, N]`` on the trained-on labels, **step-0 checkpoint first**.

    Why step 0 is in and then partly out: SPEC's AULC is the area from the first step, while cartography and
    forgetting are statistics over training (a random head's step-0 guesses are neither confidence nor a
    learning event), so those two drop the first checkpoint when there is more than one.
    """
    unknown = [d for d in detectors if d not in SINGLE_RUN]
    if unknown:
        raise ConfigError("detectors", f"{unknown[0]!r} is not a single-run detector; allowed: {', '.join(SINGLE_RUN)}")
    loss = _as_traj("losses", losses)
    p, c = _as_traj("probs", probs), np.asarray(correct)
    c = c[None, :] if c.ndim == 1 else c
    if p.shape[0] > 1:
        p, c = p[1:], c[1:]
    makers = {
        "small-loss": lambda: small_loss_scores(loss, reduce="final"),
        "aulc": lambda: aulc_scores(loss),
        "cartography": lambda: cartography_scores(p, c),
        "forgetting": lambda: forgetting_scores(c),
    }
    return {d: makers[d]() for d in detectors}


def flag_top(scores: Any, *, fraction: float | None = None, count: int | None = None) -> np.ndarray:
    """Flag the ``count`` (or ``round(fraction * N)``) highest scores; ties broken by index (stable).

    Why a count and not a threshold: most scores have no natural scale across runs, while a noise-rate
    estimate (:mod:`kss_lora.detect.estimate`) says how many labels are wrong.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise DataError(f"scores must be 1-D, got shape {s.shape}")
    if (fraction is None) == (count is None):
        raise ConfigError("flag_top", "give exactly one of fraction or count")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError("fraction", f"must be in [0, 1], got {fraction}")
        count = int(round(fraction * s.size))
    if count is None or count < 0:
        raise ConfigError("count", f"must be >= 0, got {count}")
    flags = np.zeros(s.size, dtype=bool)
    if count:
        flags[np.argsort(-s, kind="stable")[: min(count, s.size)]] = True
    return flags
