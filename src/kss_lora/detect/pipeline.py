"""Label-noise detection end to end: train what each detector needs, score, flag, evaluate.

One entry point, :func:`detect_label_issues` (config in, :class:`DetectionResult` out), in the style of
``cleanlab.filter.find_label_issues``: every detector produces a per-example score (higher = more
suspicious) and boolean flags, over the training split of the config (after noise injection).

Runs it trains (only those the chosen detectors need), all on the same examples and labels:

- ``reference``: the config as given, with eval-mode checkpoints -> ``small-loss``, ``aulc``,
  ``cartography``, ``forgetting``.
- ``rank-low`` / ``rank-high``: the same with LoRA rank ``low_rank`` / ``high_rank`` -> ``ract``
  (``d = AULC_low - AULC_high``), ``ract-final`` (final-loss discrepancy) and ``ract-low`` (the
  low-rank model's final loss alone: the capacity argument without the discrepancy, an ablation; final
  rather than AULC because a rank-1 adapter learns slowly, so its AULC mostly measures learning speed).
- ``curriculum-<s>``: RACT's curriculum: continue the low-rank adapter, rank grown to the next of
  ``curriculum_ranks``, on the examples the previous stage kept -> ``ract-curriculum``.
- ``aum-<p>``: ``aum_passes`` runs with one extra (fake) class given to disjoint random subsets of
  ``N / (K + 1)`` examples (threshold samples, Pleiss et al. 2020) -> ``aum``.
- ``fold-<f>``: k-fold cross-fitting; fold f's model never sees fold f, which it scores ->
  ``confident-learning`` (cleanlab ``find_label_issues`` on the out-of-sample probabilities).

RACT is **a reconstruction** (docs/spec.md §2): the paper ("Why LoRA Resists Label Noise", Steele) publishes no
algorithm. Our reading — low- vs high-rank adapters, discrepancy of per-example loss, flag the top estimated
noise fraction, continue on the kept set while growing rank — is documented in docs/detection.md together
with where it loses to simpler baselines.

Flags: ``aum`` uses the threshold-sample rule and ``confident-learning`` cleanlab's own pruning; every
other detector flags the top ``rate_estimate`` fraction. The rate is estimated (no oracle): confident
joint on the cross-fitted probabilities when confident learning ran, else on the low-rank (or reference)
model's in-sample probabilities, which underestimate — unless the caller passes ``rate``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kss_lora.config import RunConfig
from kss_lora.errors import ConfigError, KSSError

from . import scores as S
from .estimate import estimate_noise_rate
from .evaluate import evaluate_detection, evaluate_per_class
from .training import Trained, configure, prepare, softmax, subset_batches, train

__all__ = ["DETECTORS", "DetectOptions", "DetectionResult", "cross_fit_folds", "detect_label_issues"]

DETECTORS = (
    "ract",
    "ract-final",
    "ract-low",
    "ract-curriculum",
    "small-loss",
    "aulc",
    "aum",
    "cartography",
    "forgetting",
    "confident-learning",
)
RACT_DETECTORS = ("ract", "ract-final", "ract-low", "ract-curriculum")
DEFAULT_DETECTORS = DETECTORS
_NEEDS = {
    "ract": "ranks",
    "ract-final": "ranks",
    "ract-low": "ranks",
    "ract-curriculum": "ranks",
    "small-loss": "reference",
    "aulc": "reference",
    "cartography": "reference",
    "forgetting": "reference",
    "aum": "aum",
    "confident-learning": "folds",
}


@dataclass
class DetectOptions:
    """Detection settings (keyword options of :func:`detect_label_issues`).

    Attributes:
        detectors: which detectors to run (see :data:`DETECTORS`).
        low_rank / high_rank: RACT's two LoRA ranks. The low rank is meant to lack the capacity
            ``r (d + k - r)`` to memorise the flipped labels; the high rank to have it.
        curriculum_ranks: ranks of the curriculum stages after the low-rank one (each continues the
            previous adapter, grown, on the examples the previous stage kept).
        curriculum_epochs: epochs per curriculum stage (default: the config's ``train.epochs``).
        curriculum_seed: the score whose top fraction the curriculum's first stage drops: ``"ract"``
            (SPEC's discrepancy, the default), ``"ract-final"`` or ``"ract-low"`` (the low-rank model's final
            loss alone).
        folds: k of the k-fold cross-fitting for confident learning (>= 2).
        aum_passes: runs with disjoint threshold-sample sets (>= 2, so every example is scored).
        aum_percentile: Pleiss et al.'s percentile of threshold-sample AUMs used as the cut (99).
        rate: known noise rate; ``None`` estimates it (see module docstring).
        checkpoints_per_epoch: eval-mode checkpoints per epoch for trajectories (AULC, cartography...).
        eval_examples: cap on validation examples (and no test pass) in auxiliary runs — other ranks,
            AUM passes, folds — whose metrics are not reported; ``None`` evaluates them fully.
        primary: detector whose ranking the suspected-errors CSV follows (default: confident-learning
            when run, else the first detector named).
    """

    detectors: Sequence[str] = DEFAULT_DETECTORS
    low_rank: int = 1
    high_rank: int = 64
    curriculum_ranks: Sequence[int] = (8,)
    curriculum_epochs: int | None = None
    curriculum_seed: str = "ract"
    folds: int = 3
    aum_passes: int = 2
    aum_percentile: float = 99.0
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
        if self.folds < 2:
            raise ConfigError("folds", f"must be at least 2, got {self.folds}")
        if self.aum_passes < 2:
            raise ConfigError(
                "aum-passes",
                f"must be at least 2 (each pass scores the others' threshold samples), got {self.aum_passes}",
            )
        if not 0.0 < self.aum_percentile <= 100.0:
            raise ConfigError("aum-percentile", f"must be in (0, 100], got {self.aum_percentile}")
        if self.rate is not None and not 0.0 <= self.rate < 1.0:
            raise ConfigError("rate", f"must be in [0, 1), got {self.rate}")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ConfigError("eval-examples", f"must be at least 1, got {self.eval_examples}")
        if self.curriculum_epochs is not None and self.curriculum_epochs < 1:
            raise ConfigError("curriculum-epochs", f"must be at least 1, got {self.curriculum_epochs}")
        if self.primary is not None and self.primary not in self.detectors:
            raise ConfigError(
                "primary", f"must be one of the detectors run {list(self.detectors)}, got {self.primary!r}"
            )
        return self


@dataclass
class DetectionResult:
    """Scores, flags and bookkeeping of one detection pipeline (arrays aligned with ``ids``)."""

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

    def evaluation(self) -> pd.DataFrame | None:
        """One row per detector (:func:`evaluate_detection`), or None when the truth is unknown."""
        if self.is_noisy is None:
            return None
        rows = [
            {"detector": d, **evaluate_detection(self.is_noisy, s, self.flags.get(d))} for d, s in self.scores.items()
        ]
        return pd.DataFrame(rows)

    def evaluation_per_class(self) -> pd.DataFrame | None:
        if self.is_noisy is None:
            return None
        frames = []
        for d, s in self.scores.items():
            df = evaluate_per_class(self.is_noisy, s, self.labels, self.flags.get(d))
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
            df["is_noisy"] = self.is_noisy[order]
        return df[df["flagged"]].reset_index(drop=True) if flagged_only else df


def cross_fit_folds(labels: Any, *, folds: int, seed: int) -> np.ndarray:
    """Stratified fold id per example (0..folds-1), seeded: each class is dealt round-robin after a shuffle,
    so folds have near-equal size and class mix (cross-fitted probabilities then come from models trained
    on nearly the same label distribution)."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty(y.size, dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = (np.arange(idx.size) + offset) % folds
        offset += idx.size
    return out


# ----------------------------------------------------------------------------------------------- runs


def _trajectories(trained: Trained) -> Any:
    """Eval-mode trajectories [T, N] on the trained-on labels (step 0 included: SPEC's AULC)."""
    return trained.dynamics().checkpoint()


def _after_start(arr: np.ndarray) -> np.ndarray:
    """Drop the step-0 checkpoint (random head) for statistics defined over training epochs."""
    return arr[1:] if arr.shape[0] > 1 else arr


def _full_run(
    cfg: RunConfig, out: Path, name: str, opts: DetectOptions, *, rank: int | None = None, auxiliary: bool = False
) -> Trained:
    run = prepare(
        configure(cfg, rank=rank),
        checkpoints_per_epoch=opts.checkpoints_per_epoch,
        eval_examples=opts.eval_examples if auxiliary else None,
    )
    return train(run, out / name)


def _cross_fit(cfg: RunConfig, out: Path, labels: np.ndarray, opts: DetectOptions, res: dict[str, Any]) -> np.ndarray:
    """Out-of-sample probabilities [N, K]: fold f's model trains on folds != f and predicts fold f only."""
    folds = cross_fit_folds(labels, folds=opts.folds, seed=cfg.train.seed)
    probs: np.ndarray | None = None
    res["folds"] = folds
    for f in range(opts.folds):
        held = np.flatnonzero(folds == f)
        run = prepare(
            configure(cfg, track=False), train_index=np.flatnonzero(folds != f), eval_examples=opts.eval_examples
        )
        full = run.full_train_batches
        trained = train(run, out / f"fold-{f}")
        logits = run.logits(subset_batches(full, held))
        if probs is None:
            probs = np.full((labels.size, logits.shape[1]), np.nan)
        probs[held] = softmax(logits)
        res["fold_train_ids"].append(trained.train_ids)
        res["fold_scored_ids"].append(full.ids[held].copy())
        res["runs"][f"fold-{f}"] = trained.directory
        res["run_results"][f"fold-{f}"] = trained.result
        del run, trained
    assert probs is not None and not np.isnan(probs).any()
    return probs


def _aum(
    cfg: RunConfig, out: Path, labels: np.ndarray, k: int, opts: DetectOptions, res: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """AUM scores and flags with threshold samples (Pleiss et al. 2020).

    Pass p gives the fake class K to a random subset of ``N / (K + 1)`` examples (disjoint across passes);
    an example's score is the mean of its negated AUM over the passes in which it kept its label; the
    cut is the ``aum_percentile`` of the threshold samples' AUMs (on the fake label), pooled over passes.
    """
    n = labels.size
    rng = np.random.default_rng(cfg.train.seed + 7919)
    per_pass = n // (k + 1)
    if per_pass * opts.aum_passes > n:
        raise ConfigError("aum-passes", f"{opts.aum_passes} disjoint sets of {per_pass} exceed {n} examples")
    order = rng.permutation(n)
    total = np.zeros(n)
    count = np.zeros(n)
    thresh_scores: list[np.ndarray] = []
    for p in range(opts.aum_passes):
        fake = order[p * per_pass : (p + 1) * per_pass]
        y = labels.copy()
        y[fake] = k
        run = prepare(
            configure(cfg),
            extra_classes=1,
            train_labels=y,
            checkpoints_per_epoch=opts.checkpoints_per_epoch,
            eval_examples=opts.eval_examples,
        )
        trained = train(run, out / f"aum-{p}")
        margins = _after_start(_trajectories(trained).margin)
        s = S.aum_scores(margins)
        keep = np.ones(n, dtype=bool)
        keep[fake] = False
        total[keep] += s[keep]
        count[keep] += 1
        thresh_scores.append(s[fake])
        res["runs"][f"aum-{p}"] = trained.directory
        res["run_results"][f"aum-{p}"] = trained.result
        del run, trained
    scores = total / np.maximum(count, 1)
    cut = S.aum_threshold(np.concatenate(thresh_scores), percentile=opts.aum_percentile)
    res["extras"]["aum_threshold_score"] = cut
    return scores, scores >= cut


def _curriculum(
    cfg: RunConfig,
    out: Path,
    low: Trained,
    first_scores: np.ndarray,
    n_flag: int,
    opts: DetectOptions,
    res: dict[str, Any],
) -> np.ndarray:
    """RACT curriculum (reconstruction): flag the top ``n_flag`` by the previous stage's score, continue
    the adapter — rank grown — on the kept examples, score everything by the grown model's final loss."""
    prev_model, scores = low.run.model, first_scores
    full_labels = low.run.train_batches.labels
    for s, rank in enumerate(opts.curriculum_ranks, start=1):
        kept = ~S.flag_top(scores, count=n_flag)
        stage_cfg = configure(cfg, rank=rank)
        if opts.curriculum_epochs is not None:
            stage_cfg.train.epochs = opts.curriculum_epochs
        run = prepare(
            stage_cfg,
            initial_adapter=prev_model,
            train_index=np.flatnonzero(kept),
            checkpoints_per_epoch=opts.checkpoints_per_epoch,
        )
        full = run.full_train_batches
        trained = train(run, out / f"curriculum-{s}")
        logits = run.logits(full)
        from kss_lora.dynamics.metrics import per_example_from_logits

        scores = per_example_from_logits(logits, full_labels).loss
        res["runs"][f"curriculum-{s}"] = trained.directory
        res["run_results"][f"curriculum-{s}"] = trained.result
        prev_model = run.model
    return scores


def detect_label_issues(cfg: RunConfig, out_dir: str | Path, **options: Any) -> DetectionResult:
    """Run the chosen detectors on the training split of ``cfg`` and return scores and flags.

    Args:
        cfg: the run config (model, data, method, training, and optionally ``noise`` to plant errors with a
            known truth). Tracking settings are set per run; adapters are not saved.
        out_dir: directory for the training runs (``<out_dir>/<run name>/``).
        **options: fields of :class:`DetectOptions` (``detectors``, ``low_rank``, ``high_rank``, ``folds``,
            ``rate``...).
    """
    opts = DetectOptions(**options).validate()
    out = Path(out_dir)
    cfg = copy.deepcopy(cfg).validate()
    need = {_NEEDS[d] for d in opts.detectors}
    from kss_lora.methods.registry import LORA_METHODS

    if "ranks" in need and cfg.method.name not in LORA_METHODS:
        raise ConfigError("method.name", f"RACT compares LoRA ranks; needs a LoRA method, got {cfg.method.name!r}")

    probe = prepare(configure(cfg, track=False))  # data, noise and labels every run will see
    split = probe.data.train
    labels = probe.train_batches.labels.copy()
    ids = probe.train_batches.ids.copy()
    k = probe.data.num_labels
    label_names = list(probe.data.label_names)
    is_noisy = None if probe.is_noisy is None else probe.is_noisy.copy()
    clean = probe.task.clean_train_labels.copy() if is_noisy is not None else None
    if np.unique(labels).size < 2:
        raise KSSError("detect: the training split needs at least two classes")
    del probe

    res: dict[str, Any] = {
        "runs": {},
        "run_results": {},
        "extras": {},
        "fold_train_ids": [],
        "fold_scored_ids": [],
        "folds": None,
    }
    scores: dict[str, np.ndarray] = {}
    flags: dict[str, np.ndarray] = {}
    oos_probs = None
    if "folds" in need:
        oos_probs = _cross_fit(cfg, out, labels, opts, res)

    ref = low = high = None
    if "reference" in need:
        ref = _full_run(cfg, out, "reference", opts)
    if "ranks" in need:
        # A rank equal to the config's own reuses the reference run (same config, same seed: same model).
        low = ref if ref is not None and opts.low_rank == cfg.method.rank else None
        low = low or _full_run(cfg, out, "rank-low", opts, rank=opts.low_rank, auxiliary=True)
        high = ref if ref is not None and opts.high_rank == cfg.method.rank else None
        high = high or _full_run(cfg, out, "rank-high", opts, rank=opts.high_rank, auxiliary=True)
    for name, t in (("reference", ref), ("rank-low", low), ("rank-high", high)):
        if t is not None and name not in res["runs"]:
            res["runs"][name], res["run_results"][name] = t.directory, t.result
            if not np.array_equal(t.run.train_batches.labels, labels):
                raise KSSError(f"detect: run {name} trained on different labels than the others (noise seed?)")

    # Noise-rate estimate (no oracle) and the label a reviewer is offered instead.
    final_probs = None
    for t in (low, ref, high):
        if t is not None:
            final_probs = softmax(t.dynamics().arrays["ckpt_logits"][-1].astype(np.float64))
            break
    if opts.rate is not None:
        rate, source = float(opts.rate), "given"
    elif oos_probs is not None:
        rate, source = estimate_noise_rate(labels, oos_probs), f"confident joint, {opts.folds}-fold cross-fitted"
    else:
        assert final_probs is not None
        which = f"rank {opts.low_rank}" if low is not None else "reference"
        rate, source = estimate_noise_rate(labels, final_probs[:, :k]), f"confident joint, in-sample ({which} model)"
    suggest_probs = oos_probs if oos_probs is not None else final_probs
    assert suggest_probs is not None or "aum" in need
    n_flag = int(round(rate * labels.size))

    if "confident-learning" in opts.detectors:
        from cleanlab.filter import find_label_issues

        assert oos_probs is not None
        scores["confident-learning"] = S.self_confidence_scores(labels, oos_probs)
        # n_jobs=1: cleanlab's per-class pool shares data through fork-inherited globals, which fails
        # (NameError) in processes whose start method is spawn; K classes need no parallelism anyway.
        flags["confident-learning"] = find_label_issues(labels, oos_probs, filter_by="prune_by_noise_rate", n_jobs=1)
    if ref is not None:
        traj = _trajectories(ref)
        trained_part = S._as_traj("p", _after_start(traj.prob))
        correct = _after_start(traj.correct)
        if "small-loss" in opts.detectors:
            scores["small-loss"] = S.small_loss_scores(traj.loss, reduce="final")
        if "aulc" in opts.detectors:
            scores["aulc"] = S.aulc_scores(traj.loss)
        if "cartography" in opts.detectors:
            scores["cartography"] = S.cartography_scores(trained_part, correct)
            res["extras"]["cartography_hard_to_learn"] = S.hard_to_learn(trained_part, correct)
        if "forgetting" in opts.detectors:
            scores["forgetting"] = S.forgetting_scores(correct)
    if low is not None and high is not None:
        lo, hi = _trajectories(low).loss, _trajectories(high).loss
        ract = {
            "ract": S.rank_discrepancy_scores(lo, hi, reduce="mean"),
            "ract-final": S.rank_discrepancy_scores(lo, hi, reduce="final"),
            "ract-low": S.small_loss_scores(lo, reduce="final"),
        }
        for d in ("ract", "ract-final", "ract-low"):
            if d in opts.detectors:
                scores[d] = ract[d]
        if "ract-curriculum" in opts.detectors:
            seed_scores = ract[opts.curriculum_seed]
            scores["ract-curriculum"] = _curriculum(cfg, out, low, seed_scores, n_flag, opts, res)
    if "aum" in need:
        scores["aum"], flags["aum"] = _aum(cfg, out, labels, k, opts, res)
    for d in opts.detectors:
        flags.setdefault(d, S.flag_top(scores[d], count=n_flag))

    if suggest_probs is None:
        suggested = labels.copy()
    else:
        suggested = suggest_probs[:, :k].argmax(axis=1)
    # Default ranking for the CSV: confident learning (out-of-sample, established) when run; not SPEC's
    # `ract`, whose sign depends on the training regime (docs/detection.md).
    primary = opts.primary or ("confident-learning" if "confident-learning" in opts.detectors else opts.detectors[0])
    ordered = {d: scores[d] for d in opts.detectors}
    return DetectionResult(
        ids=ids,
        texts=list(split.texts),
        text_pairs=split.text_pairs,
        labels=labels,
        label_names=label_names,
        scores=ordered,
        flags={d: np.asarray(flags[d], dtype=bool) for d in opts.detectors},
        suggested_labels=suggested.astype(np.int64),
        rate_estimate=rate,
        rate_source=source,
        primary=primary,
        is_noisy=is_noisy,
        clean_labels=clean,
        runs=res["runs"],
        run_results=res["run_results"],
        folds=res["folds"],
        fold_train_ids=res["fold_train_ids"],
        fold_scored_ids=res["fold_scored_ids"],
        extras=res["extras"],
    )
