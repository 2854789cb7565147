"""Synthetic label noise: flip class labels or swap generated responses, reproducibly.

Why a module of its own: every robustness claim ("LoRA resists label noise", "the gap shrinks under noise")
is only as good as the noise we inject. The functions here are pure (numpy in, numpy out), draw from a
``numpy.random.Generator`` seeded explicitly, and return *which* examples were corrupted, so detectors can
be scored against ground truth and clean-label losses can be computed.

Conventions (cleanlab-style): the data comes first, every option is keyword-only, bad options raise
:class:`~kss_lora.errors.ConfigError` (field names ``noise.*``), bad data raises
:class:`~kss_lora.errors.DataError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kss_lora.errors import ConfigError, DataError

__all__ = ["NoiseResult", "inject_label_noise", "swap_responses"]

_ROW_SUM_TOL = 1e-6


@dataclass(frozen=True)
class NoiseResult:
    """Outcome of :func:`inject_label_noise`.

    Attributes:
        noisy_labels: the labels to train on, int64, same length as the input.
        is_noisy: bool mask, True exactly where ``noisy_labels != clean_labels``.
        clean_labels: a copy of the input labels (int64), kept so clean-label metrics need no bookkeeping.
        rate_realised: ``is_noisy.mean()`` over *all* examples (0.0 for empty input). For ``pairs`` noise
            this is lower than ``rate`` because only examples of the source classes can flip.
    """

    noisy_labels: np.ndarray
    is_noisy: np.ndarray
    clean_labels: np.ndarray
    rate_realised: float


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("noise.seed", f"must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_rate(rate: float | None) -> float:
    if rate is None or isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise ConfigError("noise.rate", f"must be a number in [0, 1), got {rate!r}")
    rate = float(rate)
    if not (0.0 <= rate < 1.0):
        raise ConfigError("noise.rate", f"must be in [0, 1), got {rate}")
    return rate


def _as_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError("labels must be integer class indices (got non-integer floats)")
    elif arr.dtype.kind not in "iub":
        raise DataError(f"labels must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise DataError(f"labels must be >= 0, got minimum {arr.min()}")
    return arr


def _check_num_classes(num_classes: int | None, inferred: int) -> int:
    if num_classes is None:
        return inferred
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError("noise.num_classes", f"must be a positive integer, got {num_classes!r}")
    if num_classes < inferred:
        raise DataError(f"labels contain class {inferred - 1} but num_classes is {num_classes}")
    return int(num_classes)


def _check_transition(transition: Any, num_classes: int | None) -> np.ndarray:
    t = np.asarray(transition, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
        raise ConfigError("noise.transition", f"must be a square K x K matrix with K >= 2, got shape {t.shape}")
    if num_classes is not None and t.shape[0] != num_classes:
        raise ConfigError(
            "noise.transition", f"must be {num_classes} x {num_classes} to match num_classes, got {t.shape}"
        )
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ConfigError("noise.transition", "entries must be finite and >= 0 (probabilities)")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if bad.size:
        raise ConfigError(
            "noise.transition",
            f"rows must sum to 1 (T[i, j] = P(noisy=j | clean=i)); row {bad[0]} sums to {sums[bad[0]]:.6g}",
        )
    return t


def _check_pairs(pairs: Any) -> dict[int, int]:
    if not isinstance(pairs, Mapping) or not pairs:
        raise ConfigError("noise.pairs", f"must be a non-empty mapping {{src_class: dst_class}}, got {pairs!r}")
    out: dict[int, int] = {}
    for src, dst in pairs.items():
        try:
            s, d = int(src), int(dst)
        except (TypeError, ValueError):
            raise ConfigError("noise.pairs", f"keys and values must be class indices, got {src!r}: {dst!r}") from None
        if s < 0 or d < 0 or s == d or s != src or d != dst:
            raise ConfigError(
                "noise.pairs", f"needs distinct non-negative integer classes src != dst, got {src!r}: {dst!r}"
            )
        out[s] = d
    return out


def inject_label_noise(
    labels: Any,
    *,
    rate: float | None,
    num_classes: int | None = None,
    kind: str = "symmetric",
    seed: int = 0,
    transition: Any = None,
    pairs: Mapping[int, int] | None = None,
) -> NoiseResult:
    """Corrupt class labels with symmetric or asymmetric noise.

    Args:
        labels: 1-D array of clean class indices in ``[0, num_classes)``.
        rate: flip probability in ``[0, 1)``. Required for ``symmetric`` and ``pairs`` noise; must be
            ``None`` with a ``transition`` matrix, which already fixes every flip probability (a second
            knob would make the realised rate ambiguous).
        num_classes: K. Inferred as ``max(labels) + 1`` (or from ``transition`` / ``pairs``) when None;
            pass it when a class may be absent from a small sample, or symmetric flips miss that class.
        kind: ``"symmetric"`` or ``"asymmetric"``.
        seed: seed of the ``numpy.random.default_rng`` stream; same inputs and seed give identical output.
        transition: (asymmetric) row-stochastic K x K matrix, ``T[i, j] = P(noisy = j | clean = i)``.
        pairs: (asymmetric) mapping ``{src_class: dst_class}``; each example of ``src_class`` becomes
            ``dst_class`` independently with probability ``rate`` (e.g. truck -> automobile).

    Semantics:
        * symmetric: each example is selected independently with probability ``rate`` and moved to a
          class drawn uniformly from the K - 1 *other* classes, so ``is_noisy`` is exactly the selected
          set and no "flip" silently keeps its label. For a fixed seed the uniform draws do not depend
          on ``rate``, so the noisy set at a lower rate is a subset of the set at a higher rate
          (noise sweeps are nested, which removes one source of variance between sweep points).
        * transition: the noisy label is drawn from row ``T[clean]``; ``is_noisy`` marks draws that
          differ from the clean label. Expected rate is ``sum_i pi_i (1 - T[i, i])``.
        * pairs: as described above; classes not in ``pairs`` never change.

    Returns:
        :class:`NoiseResult`.
    """
    seed = _check_seed(seed)
    clean = _as_labels(labels)
    inferred = int(clean.max()) + 1 if clean.size else 0
    if kind not in ("symmetric", "asymmetric"):
        raise ConfigError("noise.kind", f"must be 'symmetric' or 'asymmetric', got {kind!r}")
    rng = np.random.default_rng(seed)
    n = clean.size

    if kind == "symmetric":
        if transition is not None or pairs is not None:
            raise ConfigError("noise.kind", "symmetric noise takes no transition or pairs; use kind='asymmetric'")
        rate = _check_rate(rate)
        k = _check_num_classes(num_classes, inferred)
        if k < 2 and n:
            raise ConfigError("noise.num_classes", f"symmetric noise needs at least 2 classes, got {k}")
        select = rng.random(n) < rate
        offsets = rng.integers(1, max(k, 2), size=n)  # uniform over the K-1 other classes
        noisy = np.where(select, (clean + offsets) % max(k, 1), clean)
    elif transition is not None:
        if pairs is not None:
            raise ConfigError("noise.transition", "give either transition or pairs, not both")
        if rate is not None:
            raise ConfigError("noise.rate", "must be None with a transition matrix (T fixes the flip rates)")
        t = _check_transition(transition, num_classes)
        k = _check_num_classes(t.shape[0], inferred)
        cum = np.cumsum(t, axis=1)
        cum[:, -1] = 1.0  # guard against rows summing to 1 - eps
        u = rng.random(n)
        noisy = (cum[clean] <= u[:, None]).sum(axis=1).astype(np.int64)
        noisy = np.minimum(noisy, k - 1)
    elif pairs is not None:
        rate = _check_rate(rate)
        mapping = _check_pairs(pairs)
        need = max(max(mapping) + 1, max(mapping.values()) + 1)
        if num_classes is not None and need > num_classes:
            raise ConfigError("noise.pairs", f"classes must be < num_classes={num_classes}, got {mapping}")
        k = _check_num_classes(num_classes, max(inferred, need))
        dst = np.arange(k, dtype=np.int64)
        for s, d in mapping.items():
            dst[s] = d
        select = (rng.random(n) < rate) & (dst[clean] != clean)
        noisy = np.where(select, dst[clean], clean)
    else:
        raise ConfigError("noise.kind", "asymmetric noise needs a transition matrix or a pairs mapping")

    noisy = noisy.astype(np.int64)
    is_noisy = noisy != clean
    return NoiseResult(
        noisy_labels=noisy,
        is_noisy=is_noisy,
        clean_labels=clean.copy(),
        rate_realised=float(is_noisy.mean()) if n else 0.0,
    )


def _group_equal(values: list[Any]) -> list[list[int]]:
    """Positions of ``values`` grouped by equality (dict for hashable values, linear scan otherwise)."""
    groups: list[list[int]] = []
    by_key: dict[Any, int] = {}
    reps: list[Any] = []
    for pos, v in enumerate(values):
        try:
            g = by_key.get(v)
        except TypeError:  # unhashable (e.g. a dict response): compare with each group's first value
            g = next((i for i, r in enumerate(reps) if r == v), None)
        if g is None:
            g = len(groups)
            groups.append([])
            reps.append(v)
            try:
                by_key[v] = g
            except TypeError:
                pass
        groups[g].append(pos)
    return groups


def swap_responses(responses: Sequence[Any], *, rate: float, seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """Give a fraction of examples another example's response (label noise for text generation).

    Exactly ``round(rate * n)`` examples are chosen uniformly without replacement (a fixed count, so the
    realised rate does not wobble between seeds); if that count is 1 it is raised to 2, because one
    example cannot swap with itself. The chosen responses are then permuted among themselves (the
    multiset of responses is preserved) so that no chosen example receives a response *equal* to its
    own: duplicates are common in generated data, and an index-only derangement would "swap" ``"yes"``
    for ``"yes"`` and mislabel a clean example as noisy.

    Construction: the chosen examples are put in random order, grouped by equal response (largest group
    first, ties in random order), and each receives the response ``g`` places further along the cycle,
    where ``g`` is the largest group's size. With all responses distinct this is a uniformly random
    cyclic derangement. Every chosen example changes when ``2 g <= m``; otherwise only ``2 (m - g)`` can
    (the most any permutation of the chosen responses allows) and the rest keep an equal response.
    ``is_noisy`` is True exactly where the new response differs from the old one, so it is always honest.

    Args:
        responses: sequence of responses (strings or any objects comparable with ``==``).
        rate: fraction of examples to corrupt, in ``[0, 1)``.
        seed: seed of the ``numpy.random.default_rng`` stream.

    Returns:
        ``(new_responses, is_noisy)``: a new list (the input is not modified) and a bool array.
    """
    rate = _check_rate(rate)
    seed = _check_seed(seed)
    old = list(responses)
    n = len(old)
    m = round(rate * n)
    if m == 1:
        m = 2 if n >= 2 else 0
    new = list(old)
    if m == 0:
        return new, np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=m, replace=False)  # random order, so order within groups is random
    groups = _group_equal([old[i] for i in chosen])
    tie_break = rng.permutation(len(groups))
    ordered = sorted(range(len(groups)), key=lambda gi: (-len(groups[gi]), tie_break[gi]))
    seq = np.array([chosen[pos] for gi in ordered for pos in groups[gi]], dtype=np.int64)
    shift = len(groups[ordered[0]]) % m or 1  # all equal (g = m): any shift; nothing can change anyway
    for dst_idx, src_idx in zip(seq, np.roll(seq, -shift)):
        new[dst_idx] = old[src_idx]
    is_noisy = np.array([new[i] != old[i] for i in range(n)], dtype=bool)
    return new, is_noisy
