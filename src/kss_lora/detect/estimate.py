"""Noise-rate estimation, so that flags need no oracle.

Every ranking detector needs a count ("flag the top m"). Knowing the true noise count is an oracle a user
never has; confident learning (Northcutt et al. 2021) estimates the joint distribution of given and true
labels from predicted probabilities, and its off-diagonal mass is the fraction of wrong labels.

The estimate is only as good as the probabilities: with **out-of-sample** probabilities (k-fold
cross-fitting) it is consistent under class-conditional noise; with in-sample probabilities of a model
that has memorised some noisy labels it underestimates. A low-rank adapter memorises less, so its
in-sample probabilities are the fallback when no cross-fitting was run (say which in reports).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kss_lora.errors import ConfigError, DataError

__all__ = ["ESTIMATORS", "estimate_noise_rate", "noise_joint"]

ESTIMATORS = ("confident-joint", "num-issues", "argmax")


def _check(labels: Any, pred_probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 2 or p.shape[0] != y.size:
        raise DataError(f"need labels [N] and pred_probs [N, K], got {y.shape} and {p.shape}")
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= p.shape[1])):
        raise DataError(f"labels must be integer classes in [0, {p.shape[1]})")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise DataError("pred_probs must be finite and non-negative")
    if y.size == 0:
        raise DataError("cannot estimate a noise rate from zero examples")
    return y.astype(np.int64), p / p.sum(axis=1, keepdims=True)


def noise_joint(labels: Any, pred_probs: Any) -> np.ndarray:
    """Estimated joint ``Q[given, true]`` (sums to 1) via ``cleanlab.count.estimate_joint``.

    Classes absent from ``labels`` get zero rows (cleanlab requires every class to appear, so they are
    dropped from its input and re-inserted).
    """
    from cleanlab.count import estimate_joint

    y, p = _check(labels, pred_probs)
    k = p.shape[1]
    present = np.unique(y)
    if present.size < 2:
        raise DataError("confident learning needs at least two classes among the given labels")
    remap = -np.ones(k, dtype=np.int64)
    remap[present] = np.arange(present.size)
    sub = p[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    q_sub = estimate_joint(remap[y], sub)
    q = np.zeros((k, k))
    q[np.ix_(present, present)] = q_sub
    return q


def estimate_noise_rate(labels: Any, pred_probs: Any, *, method: str = "confident-joint") -> float:
    """Estimated fraction of examples whose given label is wrong.

    Methods:
        ``confident-joint``: ``1 - trace(Q)`` of :func:`noise_joint` (calibrated confident joint).
        ``num-issues``: ``cleanlab.count.num_label_issues / N`` (the count cleanlab itself prunes).
        ``argmax``: fraction whose predicted class differs from the given label (biased by model error;
            a sanity reference, not a recommendation).
    """
    if method not in ESTIMATORS:
        raise ConfigError("estimate.method", f"unknown {method!r}; allowed: {', '.join(ESTIMATORS)}")
    y, p = _check(labels, pred_probs)
    if method == "argmax":
        return float(np.mean(p.argmax(axis=1) != y))
    if method == "num-issues":
        from cleanlab.count import num_label_issues

        present = np.unique(y)
        remap = -np.ones(p.shape[1], dtype=np.int64)
        remap[present] = np.arange(present.size)
        sub = p[:, present] / np.clip(p[:, present].sum(axis=1, keepdims=True), 1e-12, None)
        return float(num_label_issues(remap[y], sub)) / y.size
    q = noise_joint(y, p)
    return float(np.clip(1.0 - np.trace(q), 0.0, 1.0))
