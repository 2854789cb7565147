"""LoRA capacity bound and the temporal separation of clean vs noisy fitting.

Why: the "LoRA resists label noise" argument (Steele) has two parts we can measure. (1) Capacity: a
rank-r update of a d x k matrix lies on the manifold of rank-<=r matrices, whose dimension is
``r (d + k - r)`` (the ``r^2`` fewer than the ``r (d + k)`` LoRA parameters is the ``GL(r)`` redundancy
``BA = (BG)(G^-1 A)``); once the number of examples to memorise exceeds that order, arbitrary labels cannot
all be fitted. (2) Timing: networks fit clean examples before noisy ones (Arpit et al. 2017), so the
per-checkpoint fitted fractions of the two groups separate, then the noisy group catches up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kss_lora.errors import ConfigError, DataError

__all__ = [
    "TemporalSeparation",
    "lora_capacity",
    "lora_target_shapes",
    "model_lora_capacity",
    "temporal_separation",
]


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ConfigError("lora.rank", f"must be a positive integer, got {rank!r}")
    return int(rank)


def lora_capacity(shapes: Iterable[tuple[int, int]] | tuple[int, int], rank: int) -> int:
    """Degrees of freedom ``sum r'(d + k - r')`` of rank-``rank`` updates to matrices of the given shapes.

    ``r' = min(rank, d, k)``: a rank above ``min(d, k)`` adds nothing (the update is then a full matrix
    with ``d k`` degrees of freedom, which the formula gives at ``r' = min(d, k)``).

    Args:
        shapes: ``(d, k)`` pairs, one per adapted matrix; a single ``(d, k)`` pair is also accepted.
        rank: LoRA rank r >= 1.
    """
    r = _check_rank(rank)
    items = list(shapes)
    if len(items) == 2 and all(isinstance(v, (int, np.integer)) for v in items):
        items = [tuple(items)]  # a single (d, k) pair
    total = 0
    for shape in items:
        try:
            d, k = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise DataError(f"each shape must be a (d, k) pair of integers, got {shape!r}") from None
        if d < 1 or k < 1:
            raise DataError(f"matrix shapes must be positive, got {(d, k)}")
        rr = min(r, d, k)
        total += rr * (d + k - rr)
    return total


def _matches(name: str, targets: Sequence[str]) -> bool:
    """PEFT's suffix rule: the full module name equals a target or ends with ``'.' + target``."""
    return any(name == t or name.endswith("." + t) for t in targets)


# The output layers PEFT's ``all-linear`` leaves out (a head is trained whole, not adapted).
OUTPUT_LAYERS = ("classifier", "score", "lm_head")


def lora_target_shapes(model: Any, *, target_modules: Sequence[str] | str) -> dict[str, tuple[int, int]]:
    """``{module_name: (out_features, in_features)}`` for every ``nn.Linear`` whose name matches a target.

    Matching follows PEFT's rules: a list of names matches an exact name or a dotted suffix (so ``"q"`` does
    not match ``"...proj_q"``); the string ``all-linear`` every linear layer but the output head; any other
    string is a regular expression full-matched against the module path. Shapes come from ``weight`` (not the
    constructor arguments), so they hold for modules whose weight was replaced.
    """
    import re

    from torch import nn  # lazy: the numpy-only parts of kss_lora must not pay torch's import time

    if not target_modules:
        raise ConfigError("lora.target_modules", "must be all-linear, a regex or a non-empty list of module names")
    if target_modules == "all-linear":

        def wanted(name: str) -> bool:
            return name.rsplit(".", 1)[-1] not in OUTPUT_LAYERS
    elif isinstance(target_modules, str):
        pattern = re.compile(target_modules)

        def wanted(name: str) -> bool:
            return pattern.fullmatch(name) is not None
    else:

        def wanted(name: str) -> bool:
            return _matches(name, target_modules)

    out: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and wanted(name):
            w = module.weight
            out[name] = (int(w.shape[0]), int(w.shape[1]))
    if not out:
        raise ConfigError(
            "lora.target_modules",
            f"no nn.Linear module matches {target_modules!r}",
        )
    return out


def model_lora_capacity(model: Any, *, rank: int, target_modules: Sequence[str]) -> int:
    """:func:`lora_capacity` summed over the model's ``nn.Linear`` modules matching ``target_modules``."""
    return lora_capacity(lora_target_shapes(model, target_modules=target_modules).values(), rank)


@dataclass(frozen=True)
class TemporalSeparation:
    """Per-checkpoint fitted fractions of clean and noisy examples, and when memorisation overtakes.

    Attributes:
        clean_fitted: ``[T]`` fraction of clean examples whose prediction equals their training label.
        noisy_fitted: ``[T]`` same for noisy examples (fitting them = memorising the wrong label).
        gap: ``clean_fitted - noisy_fitted``.
        best_checkpoint: argmax of ``gap`` (first on ties): where the two groups are most separable,
            i.e. the natural point to score a loss-based noise detector or to stop early.
        crossover: first checkpoint t >= 1 at which the noisy fitted fraction grew by more than the
            clean one since the previous checkpoint, by more than ``tol``, and actually grew:
            ``dn_t > max(dc_t, 0) + tol`` with ``dn_t = noisy_fitted[t] - noisy_fitted[t-1]`` and
            ``dc_t`` likewise. -1 if that never happens (e.g. the model never memorises).
    """

    clean_fitted: np.ndarray
    noisy_fitted: np.ndarray
    gap: np.ndarray
    best_checkpoint: int
    crossover: int


def temporal_separation(correct: Any, is_noisy: Any, *, tol: float = 0.0) -> TemporalSeparation:
    """Split fitting over time into clean and noisy examples (see :class:`TemporalSeparation`).

    Args:
        correct: ``[T, N]`` bool, prediction equals the label *trained on* (the noisy label where flipped).
        is_noisy: ``[N]`` bool, from :func:`kss_lora.noise.inject_label_noise`.
        tol: margin the noisy increase must exceed the clean one by (absorbs checkpoint-to-checkpoint
            jitter on small groups); 0 by default.
    """
    c = np.asarray(correct)
    if c.ndim != 2 or c.shape[0] < 1:
        raise DataError(f"correct must be 2-D [checkpoints, examples], got shape {c.shape}")
    if c.dtype != bool:
        if not np.all(np.isin(c, (0, 1))):
            raise DataError("correct must be boolean or 0/1")
        c = c.astype(bool)
    noisy = np.asarray(is_noisy)
    if noisy.shape != (c.shape[1],):
        raise DataError(f"is_noisy must have shape ({c.shape[1]},), got {noisy.shape}")
    noisy = noisy.astype(bool)
    if noisy.all() or not noisy.any():
        raise DataError("temporal_separation needs both clean and noisy examples")
    if not isinstance(tol, (int, float)) or tol < 0:
        raise ConfigError("tol", f"must be a non-negative number, got {tol!r}")
    clean_f = c[:, ~noisy].mean(axis=1)
    noisy_f = c[:, noisy].mean(axis=1)
    gap = clean_f - noisy_f
    dc, dn = np.diff(clean_f), np.diff(noisy_f)
    hits = np.flatnonzero(dn > np.maximum(dc, 0.0) + tol)
    return TemporalSeparation(
        clean_fitted=clean_f,
        noisy_fitted=noisy_f,
        gap=gap,
        best_checkpoint=int(np.argmax(gap)),
        crossover=int(hits[0] + 1) if hits.size else -1,
    )
