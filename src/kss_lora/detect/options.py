"""What a detection pipeline is asked for (:class:`DetectOptions`) and what it returns (:class:`DetectionResult`).

Kept apart from :mod:`.pipeline` (which trains) so the options can be validated, and a result read, without
the training code. The detector names, the runs each needs and its cost accounting live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.dynamics.stats import PRIOR_MARGIN, beats_prior, majority_rate
from kss_lora.errors import ConfigError, DataError

from .evaluate import evaluate_detection, evaluate_per_group

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "NEAR_PRIOR_MARGIN",
    "RACT_DETECTORS",
    "DetectOptions",
    "DetectionResult",
    "majority_rate",
    "runs_near_prior",
]

DETECTORS = (
    "ract",
    "ract-neg",
    "ract-final",
    "ract-low",
    "ract-curriculum",
    "small-loss",
    "aulc",
    "aum",
    "cartography",
    "forgetting",
    "confident-learning",
    "dual-lora",
)
RACT_DETECTORS = ("ract", "ract-neg", "ract-final", "ract-low", "ract-curriculum")
DEFAULT_DETECTORS = DETECTORS
# What each detector needs trained: "reference" (the config's run), "ranks" (low- and high-rank runs),
# "aum" (threshold-sample passes), "folds" (k-fold cross-fitting), "dual" (reference + the clean LoRA).
NEEDS = {
    "ract": "ranks",
    "ract-neg": "ranks",
    "ract-final": "ranks",
    "ract-low": "ranks",
    "ract-curriculum": "ranks",
    "small-loss": "reference",
    "aulc": "reference",
    "cartography": "reference",
    "forgetting": "reference",
    "aum": "aum",
    "confident-learning": "folds",
    "dual-lora": "dual",
}
DUAL_NOISY = ("suspected", "all")
# A run whose validation accuracy does not beat the majority-class rate by this margin has learned little more
# than the label prior (the entropy study's gate, docs/spec.md §2): detectors reading it rank by a broken model.
NEAR_PRIOR_MARGIN = PRIOR_MARGIN
# Runs trained to fit the suspected noise (dual-lora's "noisy" LoRA): a low validation accuracy is their purpose.
FITS_NOISE = ("dual-noisy",)


def runs_near_prior(health: dict[str, dict[str, float]], names: Sequence[str]) -> list[str]:
    """The runs among ``names`` whose validation accuracy does not beat their majority-class rate by the margin,
    or is unknown (:func:`kss_lora.dynamics.stats.beats_prior`); runs meant to fit noise, :data:`FITS_NOISE`,
    and names without a record are left out."""
    out = []
    for name in names:
        h = None if name in FITS_NOISE else health.get(name)
        if h is not None and not beats_prior(h["val_accuracy"], h["val_majority_rate"], NEAR_PRIOR_MARGIN):
            out.append(name)
    return out


@dataclass
class DetectOptions:
    """Detection settings (keyword options of :func:`~kss_lora.detect.pipeline.detect_label_issues`).

    Attributes:
        detectors: which detectors to run (see :data:`DETECTORS`).
        low_rank / high_rank: RACT's two LoRA ranks. The low rank is meant to lack the capacity
            ``r (d + k - r)`` to memorise the flipped labels; the high rank to have it.
        high_rank_lr: learning rate of the high-rank run (default: the config's ``train.lr``). Under Adam at a
            fixed γ, one step moves ``ΔW = γ B A`` roughly in proportion to the rank, so a rank-64 adapter at a
            rank-16 learning rate can diverge (it did: results/noise_detection, ``ract-regime`` seed 0, validation
            accuracy 0.34); ``lr * r_config / high_rank`` keeps the per-step change of the config's rank.
        curriculum_ranks: ranks of the curriculum stages after the low-rank one (each continues the
            previous adapter, grown, on the examples the previous stage kept).
        curriculum_epochs: epochs per curriculum stage (default: the config's ``train.epochs``).
        curriculum_seed: the score whose top fraction the curriculum's first stage drops: ``"ract"``
            (SPEC's discrepancy, the default), ``"ract-final"`` or ``"ract-low"`` (the low-rank model's final
            loss alone).
        folds: k of the k-fold cross-fitting for confident learning (>= 2).
        aum_passes: runs with disjoint threshold-sample sets (>= 2, so every example is scored).
        aum_percentile: Pleiss et al.'s percentile of threshold-sample AUMs used as the cut (99).
        dual_noisy: what the dual-LoRA detector's *noisy* LoRA trains on: ``"suspected"`` (the examples the
            reference run's small loss flags, default) or ``"all"`` (every example: the reference run itself).
        dual_epochs: epochs of the dual-LoRA runs (default: the config's ``train.epochs``).
        rate: known noise rate; ``None`` estimates it (see the pipeline's docstring).
        checkpoints_per_epoch: eval-mode checkpoints per epoch for trajectories (AULC, cartography...).
        eval_examples: cap on validation examples (and no test pass) in auxiliary runs — other ranks,
            AUM passes, folds, dual-LoRA runs — whose metrics are not reported; ``None`` evaluates them fully.
        primary: detector whose ranking the suspected-errors CSV follows (default: confident-learning
            when run, else the first detector named).
    """

    detectors: Sequence[str] = DEFAULT_DETECTORS
    low_rank: int = 1
    high_rank: int = 64
    high_rank_lr: float | None = None
    curriculum_ranks: Sequence[int] = (8,)
    curriculum_epochs: int | None = None
    curriculum_seed: str = "ract"
    folds: int = 3
    aum_passes: int = 2
    aum_percentile: float = 99.0
    dual_noisy: str = "suspected"
    dual_epochs: int | None = None
    rate: float | None = None
    checkpoints_per_epoch: int = 2
    eval_examples: int | None = None
    primary: str | None = None

    def validate(self) -> DetectOptions:
        dets = list(self.detectors)
        if not dets:
            raise ConfigError("detectors", f"choose at least one of {', '.join(DETECTORS)}")
        unknown = [d for d in dets if d not in DETECTORS]
        if unknown:
            raise ConfigError("detectors", f"unknown {unknown[0]!r}; allowed: {', '.join(DETECTORS)}")
        if len(set(dets)) != len(dets):
            raise ConfigError("detectors", "each detector may be named once")
        self.detectors = tuple(dets)
        for name in ("low_rank", "high_rank", "checkpoints_per_epoch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(name.replace("_", "-"), f"must be at least 1, got {getattr(self, name)}")
        if self.low_rank >= self.high_rank:
            raise ConfigError("low-rank", f"must be below high-rank ({self.high_rank}), got {self.low_rank}")
        ranks = [self.low_rank, *self.curriculum_ranks]
        if any(b < a for a, b in zip(ranks, ranks[1:])) or not self.curriculum_ranks:
            raise ConfigError("curriculum-ranks", f"must be non-empty and non-decreasing from low-rank, got {ranks}")
        if self.curriculum_seed not in ("ract", "ract-final", "ract-low"):
            raise ConfigError("curriculum-seed", f"must be ract, ract-final or ract-low, got {self.curriculum_seed!r}")
        if self.high_rank_lr is not None and not self.high_rank_lr > 0:
            raise ConfigError("high-rank-lr", f"must be a positive number, got {self.high_rank_lr}")
        if self.folds < 2:
            raise ConfigError("folds", f"must be at least 2, got {self.folds}")
        if self.aum_passes < 2:
            raise ConfigError(
                "aum-passes",
                f"must be at least 2 (each pass scores the others' threshold samples), got {self.aum_passes}",
            )
        if not 0.0 < self.aum_percentile <= 100.0:
            raise ConfigError("aum-percentile", f"must be in (0, 100], got {self.aum_percentile}")
        if self.dual_noisy not in DUAL_NOISY:
            raise ConfigError("dual-noisy", f"must be one of {', '.join(DUAL_NOISY)}, got {self.dual_noisy!r}")
        for name in ("curriculum_epochs", "dual_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name.replace("_", "-"), f"must be at least 1, got {value}")
        if self.rate is not None and not 0.0 <= self.rate < 1.0:
            raise ConfigError("rate", f"must be in [0, 1), got {self.rate}")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ConfigError("eval-examples", f"must be at least 1, got {self.eval_examples}")
        if self.primary is not None and self.primary not in self.detectors:
            raise ConfigError(
                "primary", f"must be one of the detectors run {list(self.detectors)}, got {self.primary!r}"
            )
        return self

    def runs_of(self, detector: str, run_names: Sequence[str]) -> list[str]:
        """The training runs (names as in ``DetectionResult.runs``) whose outputs ``detector`` reads."""
        need = NEEDS[detector]
        if need == "reference":
            return ["reference"]
        if need == "folds":
            return [r for r in run_names if r.startswith("fold-")]
        if need == "aum":
            return [r for r in run_names if r.startswith("aum-")]
        if need == "dual":
            return ["reference", *(r for r in run_names if r.startswith("dual-"))]
        if detector == "ract-low":
            return ["rank-low"]
        if detector == "ract-curriculum":
            first = ["rank-low"] if self.curriculum_seed == "ract-low" else ["rank-low", "rank-high"]
            return [*first, *(r for r in run_names if r.startswith("curriculum-"))]
        return ["rank-low", "rank-high"]


@dataclass
class DetectionResult:
    """Scores, flags and bookkeeping of one detection pipeline (arrays aligned with ``ids``).

    ``curves``: per-checkpoint rows (``what`` = ``auroc``/``auprc``/``f1_at_k`` of a detector, or
    ``fitted_noisy``/``fitted_clean`` of a run: the share of noisy / clean examples whose prediction equals
    the given label), when the truth is known. ``timings``: per run, seconds by phase (``prepare_s``,
    ``train_steps_s``, ``checkpoint_s``, ``eval_s``, ``other_s``, ``wall_s``) and its size (``n_train``,
    ``epochs``). ``costs``: per detector, the runs it needs and their summed size and seconds.
    ``run_health``: per run, ``val_accuracy``, ``val_majority_rate`` and ``val_n`` (examples it was judged on).
    ``near_prior``: per detector, the runs it reads whose validation accuracy does not beat the majority rate by
    :data:`NEAR_PRIOR_MARGIN` (:func:`runs_near_prior`). ``scored``: the rows whose truth is known (None: all
    of them), e.g. the ChaosNLI items pooled with bulk NLI rows that have no 100-vote label; the evaluation,
    the curves and :attr:`noise_rate_true` read only these, and tables show ``is_noisy`` as empty elsewhere.
    """

    ids: np.ndarray
    texts: list[str]
    text_pairs: list[str] | None
    labels: np.ndarray
    label_names: list[str]
    scores: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]
    suggested_labels: np.ndarray
    rate_estimate: float
    rate_source: str
    primary: str
    is_noisy: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    runs: dict[str, Path] = field(default_factory=dict)
    run_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    folds: np.ndarray | None = None
    fold_train_ids: list[np.ndarray] = field(default_factory=list)
    fold_scored_ids: list[np.ndarray] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    run_health: dict[str, dict[str, float]] = field(default_factory=dict)
    near_prior: dict[str, list[str]] = field(default_factory=dict)
    scored: np.ndarray | None = None

    def truth_known(self) -> np.ndarray:
        """Boolean mask of the rows whose truth is known."""
        return np.ones(self.ids.size, dtype=bool) if self.scored is None else self.scored

    @property
    def noise_rate_true(self) -> float | None:
        """The share of wrong labels among the rows whose truth is known (None when it is unknown)."""
        return None if self.is_noisy is None else float(self.is_noisy[self.truth_known()].mean())

    def is_noisy_column(self, order: np.ndarray | None = None) -> Any:
        """``is_noisy`` for a table, in ``order``: nullable booleans, empty where the truth is unknown."""
        assert self.is_noisy is not None
        idx = np.arange(self.ids.size) if order is None else order
        if self.scored is None:
            return self.is_noisy[idx]
        return pd.array(np.where(self.scored[idx], self.is_noisy[idx], None), dtype="boolean")

    def evaluation(self) -> pd.DataFrame | None:
        """One row per detector (:func:`evaluate_detection` over the rows whose truth is known, plus its
        ``cost_*`` columns), or None when the truth is unknown."""
        if self.is_noisy is None:
            return None
        m = self.truth_known()
        rows = [
            {
                "detector": d,
                **evaluate_detection(self.is_noisy[m], s[m], None if d not in self.flags else self.flags[d][m]),
                **{f"cost_{k}": v for k, v in self.costs.get(d, {}).items()},
                "runs_near_prior": len(self.near_prior.get(d, [])),
            }
            for d, s in self.scores.items()
        ]
        return pd.DataFrame(rows)

    def evaluation_per_class(self) -> pd.DataFrame | None:
        """:func:`evaluate_per_class` per detector (``detector``, ``class`` columns), or None when the truth is
        unknown."""
        df = self.evaluation_per_group(self.labels, column="class")
        return None if df is None else df.astype({"class": int})

    def evaluation_per_group(self, groups: Any, *, column: str = "group") -> pd.DataFrame | None:
        """:func:`evaluate_per_group` per detector over the rows whose truth is known (``groups``: one value
        per row, aligned with ``ids``; e.g. ChaosNLI items' entropy buckets), or None when the truth is unknown."""
        if self.is_noisy is None:
            return None
        g = np.asarray(groups)
        if g.shape != self.ids.shape:
            raise DataError(f"{column}: {g.shape[0] if g.ndim else 0} values for {self.ids.size} rows")
        m = self.truth_known()
        frames = []
        for d, s in self.scores.items():
            flags = None if d not in self.flags else self.flags[d][m]
            df = evaluate_per_group(self.is_noisy[m], s[m], g[m], flags, column=column)
            df.insert(0, "detector", d)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def ranked(self, detector: str | None = None, *, flagged_only: bool = True) -> pd.DataFrame:
        """The suspected label errors, most suspicious first: ``id, text, given_label, suggested_label,
        score`` (+ ``text_pair``, ``rank``, ``flagged``, and ``is_noisy`` when the truth is known)."""
        d = detector or self.primary
        s = self.scores[d]
        order = np.argsort(-s, kind="stable")
        names = np.asarray(self.label_names, dtype=object)
        df = pd.DataFrame(
            {
                "rank": np.arange(1, s.size + 1),
                "id": self.ids[order],
                "text": [self.texts[i] for i in order],
                "given_label": names[self.labels[order]],
                "suggested_label": names[self.suggested_labels[order]],
                "score": s[order],
                "flagged": self.flags[d][order],
            }
        )
        if self.text_pairs is not None:
            df.insert(3, "text_pair", [self.text_pairs[i] for i in order])
        if self.is_noisy is not None:
            df["is_noisy"] = self.is_noisy_column(order)
        return df[df["flagged"]].reset_index(drop=True) if flagged_only else df
