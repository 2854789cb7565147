"""Per-example training-dynamics metrics from checkpoint trajectories.

Every function takes arrays shaped ``[T checkpoints, N examples]`` and returns per-example arrays of
length N. Why trajectories rather than a final snapshot: how an example is *learned* (early, late, never,
or learned then forgotten) separates easy, ambiguous and mislabelled items far better than its final loss
(Swayamdipta et al. 2020, "Dataset Cartography"; Toneva et al. 2019, "An Empirical Study of Example
Forgetting"; Pleiss et al. 2020, "Identifying Mislabeled Data using the Area Under the Margin Ranking").

Losses are natural-log cross-entropies (nats) against the label the caller chooses (the trained-on label,
the clean label, or ChaosNLI's majority label); the functions do not care which, the caller must say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.errors import ConfigError, DataError

__all__ = [
    "Cartography",
    "ExampleOutputs",
    "Forgetting",
    "aulc",
    "aum",
    "cartography",
    "example_table",
    "forgetting_events",
    "learning_time",
    "margin_from_logits",
    "per_example_from_logits",
    "unlearning",
]

LN2 = math.log(2.0)


def _traj(name: str, values: Any) -> np.ndarray:
    """Validate a float trajectory ``[T, N]``; NaN/inf are rejected because they poison every mean."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be 2-D [checkpoints, examples], got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise DataError(f"{name} needs at least one checkpoint, got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{name} has {bad} non-finite entries (NaN or inf)")
    return arr


def _bool_traj(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise DataError(f"{name} must be 2-D [checkpoints, examples], got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise DataError(f"{name} must be boolean or 0/1")
        arr = arr.astype(bool)
    return arr


def _same_shape(**arrays: np.ndarray | None) -> None:
    shapes = {k: v.shape for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise DataError(f"trajectories must share one [checkpoints, examples] shape, got {shapes}")


def aulc(losses: Any) -> np.ndarray:
    """Area under the loss curve: ``AULC_i = (1/T) sum_t loss_i(t)`` (docs/spec.md §2, Steele).

    A plain mean over checkpoints, so it is only comparable between runs with the same checkpoint grid.
    """
    return _traj("losses", losses).mean(axis=0)


def learning_time(losses: Any, *, threshold: float, persistent: bool = False) -> np.ndarray:
    """Index of the first checkpoint whose loss is strictly below ``threshold``; -1 if it never is.

    With ``persistent=True`` the loss must also stay below the threshold at every later checkpoint
    (the example is learned for good); un-learned examples then get -1 or a late index. The result is a
    checkpoint *index* (0 = the first row), not a step count: map it through your checkpoint steps.
    A useful threshold is ``ln 2`` (p(y) > 0.5, which implies the label is the argmax).
    """
    arr = _traj("losses", losses)
    number = isinstance(threshold, (int, float, np.floating, np.integer)) and not isinstance(threshold, bool)
    if not number or not math.isfinite(threshold):
        raise ConfigError("threshold", f"must be a finite number (a loss in nats), got {threshold!r}")
    below = arr < threshold
    if persistent:
        # below_from_t[t] = all(below[t:]); computed as a reversed cumulative AND.
        below = np.flip(np.logical_and.accumulate(np.flip(below, axis=0), axis=0), axis=0)
    first = np.argmax(below, axis=0)
    return np.where(below.any(axis=0), first, -1).astype(np.int64)


def unlearning(losses: Any) -> np.ndarray:
    """``loss_final - loss_initial`` per example; positive = the model ended worse on it ("un-learned")."""
    arr = _traj("losses", losses)
    return arr[-1] - arr[0]


@dataclass(frozen=True)
class Cartography:
    """Dataset-cartography coordinates (Swayamdipta et al. 2020), each of length N.

    ``confidence`` = mean p(y) over checkpoints, ``variability`` = population std (ddof=0, as in the
    paper's code) of p(y), ``correctness`` = fraction of checkpoints at which the prediction was right.
    """

    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray


def cartography(probs: Any, correct: Any) -> Cartography:
    """Cartography coordinates from ``probs`` (p of the label) and ``correct`` trajectories ``[T, N]``."""
    p = _traj("probs", probs)
    if np.any((p < 0) | (p > 1)):
        raise DataError("probs must be probabilities in [0, 1]")
    c = _bool_traj("correct", correct)
    _same_shape(probs=p, correct=c)
    return Cartography(confidence=p.mean(axis=0), variability=p.std(axis=0, ddof=0), correctness=c.mean(axis=0))


@dataclass(frozen=True)
class Forgetting:
    """Forgetting statistics (Toneva et al. 2019).

    ``counts[i]`` is the number of correct -> incorrect transitions between consecutive checkpoints.
    ``never_learned[i]`` is True when the example was never correct; the paper ranks these as
    "infinitely forgotten" (hardest). We keep ``counts`` at 0 for them and flag them instead, so the
    counts stay integers: sort by ``(never_learned, counts)`` to reproduce the paper's order.
    """

    counts: np.ndarray
    never_learned: np.ndarray


def forgetting_events(correct: Any) -> Forgetting:
    """Count forgetting events (correct at t, incorrect at t+1) per example; flag never-learned examples."""
    c = _bool_traj("correct", correct)
    events = c[:-1] & ~c[1:]
    return Forgetting(counts=events.sum(axis=0).astype(np.int64), never_learned=~c.any(axis=0))


def aum(margins: Any) -> np.ndarray:
    """Area under the margin (Pleiss et al. 2020): mean over checkpoints of ``z_y - max_{k != y} z_k``.

    Mislabelled examples tend to have negative AUM: the network keeps preferring another class.
    """
    return _traj("margins", margins).mean(axis=0)


def _logits_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim < 2 or z.shape[-1] < 2:
        raise DataError(f"logits must be [..., N, K] with K >= 2 classes, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise DataError("logits contain NaN or inf")
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"labels must be integer class indices, got dtype {y.dtype}")
    try:
        y = np.broadcast_to(y, z.shape[:-1])
    except ValueError:
        raise DataError(f"labels shape {np.shape(labels)} does not match logits shape {z.shape}") from None
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise DataError(f"labels must be in [0, {z.shape[-1]}), got range [{y.min()}, {y.max()}]")
    return z, y.astype(np.int64)


def margin_from_logits(logits: Any, labels: Any) -> np.ndarray:
    """Logit margin ``z_y - max_{k != y} z_k`` for logits ``[N, K]`` (or ``[T, N, K]``) and labels ``[N]``."""
    z, y = _logits_labels(logits, labels)
    zy = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, y[..., None], -np.inf, axis=-1)
    return zy - others.max(axis=-1)


@dataclass(frozen=True)
class ExampleOutputs:
    """Per-example quantities at one checkpoint (or ``[T, N]`` when given stacked logits)."""

    loss: np.ndarray
    prob: np.ndarray
    margin: np.ndarray
    correct: np.ndarray


def per_example_from_logits(logits: Any, labels: Any) -> ExampleOutputs:
    """Cross-entropy (nats), p(label), logit margin and correctness from logits ``[..., N, K]``.

    ``correct`` is ``margin > 0``: a tie with another class counts as wrong (argmax would break the tie
    by index, which would make correctness depend on class order). The loss uses a stable log-softmax.
    Stack per-checkpoint results with ``np.stack`` (or pass ``[T, N, K]`` logits) to get trajectories.
    """
    z, y = _logits_labels(logits, labels)
    zmax = z.max(axis=-1, keepdims=True)
    logsumexp = (zmax + np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True)))[..., 0]
    zy = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    loss = logsumexp - zy
    margin = margin_from_logits(z, y)
    return ExampleOutputs(loss=loss, prob=np.exp(-loss), margin=margin, correct=margin > 0)


def example_table(
    losses: Any,
    probs: Any = None,
    margins: Any = None,
    correct: Any = None,
    *,
    threshold: float = LN2,
    index: Any = None,
) -> pd.DataFrame:
    """All per-example metrics in one DataFrame (one row per example).

    Columns always present: ``aulc, loss_initial, loss_final, unlearning, learning_time``
    (first checkpoint with loss < ``threshold``, default ln 2, i.e. p(y) > 0.5), ``learning_time_persistent``.
    With ``probs`` and ``correct``: ``confidence, variability, correctness``. With ``correct``:
    ``forgetting_events, never_learned``. With ``margins``: ``aum``. The optional inputs may be None
    because generation tasks often only have losses. ``index`` (e.g. uids) becomes the DataFrame index.
    """
    lo = _traj("losses", losses)
    p = _traj("probs", probs) if probs is not None else None
    m = _traj("margins", margins) if margins is not None else None
    c = _bool_traj("correct", correct) if correct is not None else None
    _same_shape(losses=lo, probs=p, margins=m, correct=c)
    cols: dict[str, np.ndarray] = {
        "aulc": aulc(lo),
        "loss_initial": lo[0].copy(),
        "loss_final": lo[-1].copy(),
        "unlearning": unlearning(lo),
        "learning_time": learning_time(lo, threshold=threshold),
        "learning_time_persistent": learning_time(lo, threshold=threshold, persistent=True),
    }
    if p is not None:
        if c is None:
            raise DataError("example_table: probs need the correct trajectory too (for cartography)")
        carto = cartography(p, c)
        cols.update(confidence=carto.confidence, variability=carto.variability, correctness=carto.correctness)
    if c is not None:
        fe = forgetting_events(c)
        cols.update(forgetting_events=fe.counts, never_learned=fe.never_learned)
    if m is not None:
        cols["aum"] = aum(m)
    if index is not None and len(index) != lo.shape[1]:
        raise DataError(f"index has {len(index)} entries but there are {lo.shape[1]} examples")
    return pd.DataFrame(cols, index=None if index is None else pd.Index(index))
