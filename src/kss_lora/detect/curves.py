"""Detection over training time: each detector's AUROC at every checkpoint, and how many flipped labels each run
has fitted by then.

Why: RACT's premise (docs/spec.md §2) is a race — clean labels are learned early, flipped labels are memorised
late, and a low-rank adapter memorises less than a high-rank one. Whether rank discrepancy can work at all
depends on *when* it is read, so a single end-of-training number hides the regime. These pure functions read
the eval-mode trajectories ``[T, N]`` a pipeline already recorded:

- :func:`fitted_curves`: per run and checkpoint, ``fitted_noisy`` = the share of noisy examples whose
  prediction equals their (noisy) given label — how much noise the run has memorised — and ``fitted_clean``
  = the same share among clean examples (its training accuracy on them);
- :func:`prefix_scorers` / :func:`detector_curves`: each trajectory detector recomputed from the checkpoints
  up to ``t`` only (what it would have said had training stopped there), scored against the truth.

Rows are long-form dicts ``{what, of, checkpoint, step, epoch, epoch_end, value}``; a benchmark writes them to a
csv and keeps the epoch ends for its tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import scores as S
from .evaluate import evaluate_detection

__all__ = ["CURVE_METRICS", "detector_curves", "epoch_axis", "fitted_curves", "prefix_scorers"]

CURVE_METRICS = ("auroc", "auprc", "f1_at_k")
Scorer = Callable[[int], np.ndarray]


def epoch_axis(steps: Any, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional epoch of each checkpoint (``step / steps_per_epoch``) and whether it closes an epoch (the
    last checkpoint always does: a run may end mid-epoch)."""
    s = np.asarray(steps, dtype=np.int64)
    spe = max(int(steps_per_epoch), 1)
    end = (s > 0) & ((s % spe == 0) | (s == s.max()))
    return s / spe, end


def _rows(what: str, of: str, values: Sequence[float], steps: np.ndarray, spe: int) -> list[dict[str, Any]]:
    epoch, end = epoch_axis(steps, spe)
    return [
        {
            "what": what,
            "of": of,
            "checkpoint": t,
            "step": int(steps[t]),
            "epoch": float(epoch[t]),
            "epoch_end": bool(end[t]),
            "value": float(v),
        }
        for t, v in enumerate(values)
    ]


def fitted_curves(
    truth: Any, correct_by_run: Mapping[str, Any], steps_by_run: Mapping[str, Any], steps_per_epoch: Mapping[str, int]
) -> list[dict[str, Any]]:
    """``fitted_noisy`` and ``fitted_clean`` per run and checkpoint.

    Args:
        truth: bool mask over the run's training examples, True where the given label is wrong.
        correct_by_run: per run, ``[T, N]`` booleans "prediction equals the given label" (eval mode).
        steps_by_run / steps_per_epoch: each run's checkpoint steps and steps per epoch.
    """
    t = np.asarray(truth, dtype=bool)
    rows: list[dict[str, Any]] = []
    for run, correct in correct_by_run.items():
        c = np.asarray(correct, dtype=bool)
        if c.ndim != 2 or c.shape[1] != t.size:
            raise ValueError(f"run {run}: correctness must be [T, {t.size}], got {c.shape}")
        steps = np.asarray(steps_by_run[run])
        spe = int(steps_per_epoch[run])
        if t.any():
            rows += _rows("fitted_noisy", run, c[:, t].mean(axis=1), steps, spe)
        if (~t).any():
            rows += _rows("fitted_clean", run, c[:, ~t].mean(axis=1), steps, spe)
    return rows


def prefix_scorers(
    reference: Any = None,
    low: Any = None,
    high: Any = None,
    aum_passes: Sequence[tuple[Any, np.ndarray]] = (),
) -> dict[str, Scorer]:
    """Each trajectory detector as a function of the last checkpoint ``t`` it may read (as the pipeline scores
    it at the end, with ``t = T - 1``).

    ``reference``, ``low``, ``high``: :class:`~kss_lora.dynamics.metrics.ExampleOutputs` trajectories
    ``[T, N]`` of the config's run and of the two RACT ranks (same checkpoint grid). ``aum_passes``: per
    threshold-sample pass, its trajectories and the boolean mask of the examples that kept their label.
    Statistics over training epochs (cartography, forgetting, AUM) skip step 0 unless ``t = 0``.
    """

    def upto(arr: np.ndarray, t: int, *, after_start: bool = False) -> np.ndarray:
        part = arr[: t + 1]
        return part[1:] if after_start and part.shape[0] > 1 else part

    out: dict[str, Scorer] = {}
    if reference is not None:
        r = reference
        out["small-loss"] = lambda t: r.loss[t].copy()
        out["aulc"] = lambda t: S.aulc_scores(upto(r.loss, t))
        out["cartography"] = lambda t: S.cartography_scores(
            upto(r.prob, t, after_start=True), upto(r.correct, t, after_start=True)
        )
        out["forgetting"] = lambda t: S.forgetting_scores(upto(r.correct, t, after_start=True))
    if low is not None and high is not None:
        lo, hi = low, high
        out["ract"] = lambda t: S.rank_discrepancy_scores(upto(lo.loss, t), upto(hi.loss, t), reduce="mean")
        out["ract-neg"] = lambda t: -S.rank_discrepancy_scores(upto(lo.loss, t), upto(hi.loss, t), reduce="mean")
        out["ract-final"] = lambda t: lo.loss[t] - hi.loss[t]
        out["ract-low"] = lambda t: lo.loss[t].copy()
    if aum_passes:
        passes = list(aum_passes)

        def aum_at(t: int) -> np.ndarray:
            n = np.asarray(passes[0][1]).size
            total, count = np.zeros(n), np.zeros(n)
            for traj, kept in passes:
                s = S.aum_scores(upto(traj.margin, t, after_start=True))
                total[kept] += s[kept]
                count[kept] += 1
            return total / np.maximum(count, 1)

        out["aum"] = aum_at
    return out


def detector_curves(
    truth: Any,
    scorers: Mapping[str, Scorer],
    steps: Any,
    steps_per_epoch: int,
    *,
    detectors: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """AUROC, AUPRC and F1 at k of each scorer at every checkpoint of the shared grid ``steps``."""
    t_mask = np.asarray(truth, dtype=bool)
    steps = np.asarray(steps)
    rows: list[dict[str, Any]] = []
    for name, scorer in scorers.items():
        if detectors is not None and name not in detectors:
            continue
        per = {m: [] for m in CURVE_METRICS}
        for t in range(steps.size):
            ev = evaluate_detection(t_mask, scorer(t))
            for m in CURVE_METRICS:
                per[m].append(ev[m])
        for m in CURVE_METRICS:
            rows += _rows(m, name, per[m], steps, steps_per_epoch)
    return rows
