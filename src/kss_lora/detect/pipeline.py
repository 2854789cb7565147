"""Label-noise detection end to end: train what each detector needs, score, flag, evaluate.

One entry point, :func:`detect_label_issues` (config in, :class:`DetectionResult` out), in the style of
``cleanlab.filter.find_label_issues``: every detector produces a per-example score (higher = more
suspicious) and boolean flags, over the training split of the config (after noise injection, or with the
``given_labels`` the caller passes, e.g. ChaosNLI's original labels: :mod:`.human`).

Runs it trains (only those the chosen detectors need), all on the same examples and labels:

- ``reference``: the config as given, with eval-mode checkpoints -> ``small-loss``, ``aulc``,
  ``cartography``, ``forgetting``.
- ``rank-low`` / ``rank-high``: the same with LoRA rank ``low_rank`` / ``high_rank`` -> ``ract``
  (``d = AULC_low - AULC_high``), ``ract-neg`` (``-d``: the other sign, which is the right one before the
  high rank memorises noise), ``ract-final`` (final-loss discrepancy) and ``ract-low`` (the low-rank model's
  final loss alone: the capacity argument without the discrepancy, an ablation).
- ``curriculum-<s>``: RACT's curriculum: continue the low-rank adapter, rank grown to the next of
  ``curriculum_ranks``, on the examples the previous stage kept -> ``ract-curriculum``.
- ``aum-<p>``: ``aum_passes`` runs with one extra (fake) class given to disjoint random subsets of
  ``N / (K + 1)`` examples (threshold samples, Pleiss et al. 2020) -> ``aum``.
- ``fold-<f>``: k-fold cross-fitting; fold f's model never sees fold f, which it scores ->
  ``confident-learning`` (cleanlab ``find_label_issues`` on the out-of-sample probabilities).
- ``dual-clean`` / ``dual-noisy``: two LoRAs on the examples the reference's small loss keeps / suspects ->
  ``dual-lora`` (in the spirit of Delora, :mod:`.dual_lora`).

RACT is **a reconstruction** (docs/spec.md §2): the paper ("Why LoRA Resists Label Noise", Steele) publishes no
algorithm; docs/detection.md says where our reading loses to simpler baselines.

Flags: ``aum`` uses the threshold-sample rule, ``confident-learning`` cleanlab's own pruning, ``dual-lora``
its noisy LoRA as the threshold; every other detector flags the top ``rate_estimate`` fraction. The rate is
estimated (no oracle): confident joint on the cross-fitted probabilities when confident learning ran, else
on the low-rank (or reference) model's in-sample probabilities at the first epoch end, which underestimate —
unless ``rate`` is given.

When the truth is known the result also carries per-checkpoint curves (:mod:`.curves`); every result
carries per-run phase timings, per-detector costs (runs, examples x epochs trained, seconds) and each run's
health: a run whose validation accuracy does not beat the validation majority-class rate by ``NEAR_PRIOR_MARGIN``
learned little beyond the label prior (a diverged or collapsed run), and every detector that reads one says so
(``near_prior``; the ``runs_near_prior`` column of the evaluation): its scores rank examples by a broken model.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kss_lora.config import RunConfig
from kss_lora.errors import ConfigError, DataError, KSSError

from . import scores as S
from .curves import detector_curves, fitted_curves, prefix_scorers
from .estimate import estimate_noise_rate
from .options import (
    DEFAULT_DETECTORS,
    DETECTORS,
    NEEDS,
    RACT_DETECTORS,
    DetectionResult,
    DetectOptions,
    majority_rate,
    runs_near_prior,
)
from .training import Trained, configure, prepare, softmax, subset_batches, train

__all__ = [
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "RACT_DETECTORS",
    "DetectOptions",
    "DetectionResult",
    "cross_fit_folds",
    "detect_label_issues",
]


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


@dataclass
class _Ctx:
    """What every run of one pipeline shares: config, output folder, options, the labels trained on."""

    cfg: RunConfig
    out: Path
    opts: DetectOptions
    labels: np.ndarray
    given: bool  # labels come from the caller (given_labels), not from the config
    res: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    health: dict[str, dict[str, float]] = field(default_factory=dict)

    def prep(self, cfg: RunConfig, **variant: Any) -> Any:
        """``prepare`` with the pipeline's labels (when given) unless the variant relabels itself."""
        if self.given and variant.get("train_labels") is None:
            variant["train_labels"] = self.labels
        return prepare(cfg, **variant)

    def record(self, name: str, trained: Trained) -> None:
        self.res["runs"][name] = trained.directory
        self.res["run_results"][name] = trained.result
        self.timings[name] = {**trained.timing, "_dir": str(trained.directory)}  # _dir: shared runs counted once
        val = trained.run.val_batches
        acc = trained.result.get("val_accuracy")
        self.health[name] = {
            "val_accuracy": float("nan") if acc is None else float(acc),
            "val_majority_rate": majority_rate(val.labels) if val is not None else float("nan"),
            # auxiliary runs may be judged on a capped validation (eval_examples): say on how many
            "val_n": float(len(val.labels)) if val is not None else 0.0,
        }


def _trajectories(trained: Trained) -> Any:
    """Eval-mode trajectories [T, N] on the trained-on labels (step 0 included: SPEC's AULC)."""
    return trained.dynamics().checkpoint()


def _after_start(arr: np.ndarray) -> np.ndarray:
    """Drop the step-0 checkpoint (random head) for statistics defined over training epochs."""
    return arr[1:] if arr.shape[0] > 1 else arr


def _full_run(
    ctx: _Ctx, name: str, *, rank: int | None = None, lr: float | None = None, auxiliary: bool = False
) -> Trained:
    run = ctx.prep(
        configure(ctx.cfg, rank=rank, lr=lr),
        checkpoints_per_epoch=ctx.opts.checkpoints_per_epoch,
        eval_examples=ctx.opts.eval_examples if auxiliary else None,
    )
    return train(run, ctx.out / name)


def _in_sample_probs(t: Trained) -> tuple[np.ndarray, np.ndarray]:
    """Softmax at the last checkpoint, and at the first epoch end (the last checkpoint of a one-epoch run).

    The in-sample noise-rate estimate reads the first epoch end: a model trained long enough memorises the
    flipped labels, its confident joint then has no off-diagonal mass, and the estimate falls to 0 (it did
    after 30 epochs: results/noise_detection, ``ract-regime`` seed 0), flagging nothing. Noise is fitted late,
    so the first epoch end is the checkpoint least affected.
    """
    dyn = t.dynamics()
    logits = dyn.arrays["ckpt_logits"].astype(np.float64)
    ends = np.flatnonzero(dyn.epoch_end)  # epoch ends, and the last checkpoint (a run cut short of an epoch)
    first = int(ends[0]) if ends.size else len(logits) - 1
    return softmax(logits[-1]), softmax(logits[first])


def _cross_fit(ctx: _Ctx) -> np.ndarray:
    """Out-of-sample probabilities [N, K]: fold f's model trains on folds != f and predicts fold f only."""
    opts, labels, res = ctx.opts, ctx.labels, ctx.res
    folds = cross_fit_folds(labels, folds=opts.folds, seed=ctx.cfg.train.seed)
    probs: np.ndarray | None = None
    res["folds"] = folds
    for f in range(opts.folds):
        held = np.flatnonzero(folds == f)
        run = ctx.prep(
            configure(ctx.cfg, track=False), train_index=np.flatnonzero(folds != f), eval_examples=opts.eval_examples
        )
        full = run.full_train_batches
        trained = train(run, ctx.out / f"fold-{f}")
        t0 = time.perf_counter()
        logits = run.logits(subset_batches(full, held))
        trained.timing["score_s"] = time.perf_counter() - t0
        trained.timing["wall_s"] += trained.timing["score_s"]
        if probs is None:
            probs = np.full((labels.size, logits.shape[1]), np.nan)
        probs[held] = softmax(logits)
        res["fold_train_ids"].append(trained.train_ids)
        res["fold_scored_ids"].append(full.ids[held].copy())
        ctx.record(f"fold-{f}", trained)
        del run, trained
    assert probs is not None and not np.isnan(probs).any()
    return probs


def _aum(ctx: _Ctx, k: int) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, np.ndarray]]]:
    """AUM scores and flags with threshold samples (Pleiss et al. 2020), and each pass's trajectories.

    Pass p gives the fake class K to a random subset of ``N / (K + 1)`` examples (disjoint across passes);
    an example's score is the mean of its negated AUM over the passes in which it kept its label; the
    cut is the ``aum_percentile`` of the threshold samples' AUMs (on the fake label), pooled over passes.
    """
    opts, labels = ctx.opts, ctx.labels
    n = labels.size
    rng = np.random.default_rng(ctx.cfg.train.seed + 7919)
    per_pass = n // (k + 1)
    if per_pass * opts.aum_passes > n:
        raise ConfigError("aum-passes", f"{opts.aum_passes} disjoint sets of {per_pass} exceed {n} examples")
    order = rng.permutation(n)
    total = np.zeros(n)
    count = np.zeros(n)
    thresh_scores: list[np.ndarray] = []
    passes: list[tuple[Any, np.ndarray]] = []
    for p in range(opts.aum_passes):
        fake = order[p * per_pass : (p + 1) * per_pass]
        y = labels.copy()
        y[fake] = k
        run = ctx.prep(
            configure(ctx.cfg),
            extra_classes=1,
            train_labels=y,
            checkpoints_per_epoch=opts.checkpoints_per_epoch,
            eval_examples=opts.eval_examples,
        )
        trained = train(run, ctx.out / f"aum-{p}")
        traj = _trajectories(trained)
        s = S.aum_scores(_after_start(traj.margin))
        keep = np.ones(n, dtype=bool)
        keep[fake] = False
        total[keep] += s[keep]
        count[keep] += 1
        thresh_scores.append(s[fake])
        passes.append((traj, keep))
        ctx.record(f"aum-{p}", trained)
        del run, trained
    scores = total / np.maximum(count, 1)
    cut = S.aum_threshold(np.concatenate(thresh_scores), percentile=opts.aum_percentile)
    ctx.res["extras"]["aum_threshold_score"] = cut
    return scores, scores >= cut, passes


def _curriculum(ctx: _Ctx, low: Trained, first_scores: np.ndarray, n_flag: int) -> np.ndarray:
    """RACT curriculum (reconstruction): flag the top ``n_flag`` by the previous stage's score, continue
    the adapter — rank grown — on the kept examples, score everything by the grown model's final loss."""
    from kss_lora.dynamics.metrics import per_example_from_logits

    prev_model, scores = low.run.model, first_scores
    full_labels = low.run.train_batches.labels
    for s, rank in enumerate(ctx.opts.curriculum_ranks, start=1):
        kept = ~S.flag_top(scores, count=n_flag)
        stage_cfg = configure(ctx.cfg, rank=rank)
        if ctx.opts.curriculum_epochs is not None:
            stage_cfg.train.epochs = ctx.opts.curriculum_epochs
        run = ctx.prep(
            stage_cfg,
            initial_adapter=prev_model,
            train_index=np.flatnonzero(kept),
            checkpoints_per_epoch=ctx.opts.checkpoints_per_epoch,
        )
        full = run.full_train_batches
        trained = train(run, ctx.out / f"curriculum-{s}")
        t0 = time.perf_counter()
        scores = per_example_from_logits(run.logits(full), full_labels).loss
        trained.timing["score_s"] = time.perf_counter() - t0
        trained.timing["wall_s"] += trained.timing["score_s"]
        ctx.record(f"curriculum-{s}", trained)
        prev_model = run.model
    return scores


def _costs(opts: DetectOptions, timings: dict[str, dict[str, float]], scoring_s: dict[str, float]) -> dict:
    """Per detector: the runs it reads (a run shared with another rank counted once), examples x epochs
    trained, and seconds (those runs' wall time plus the detector's own scoring)."""
    out: dict[str, dict[str, float]] = {}
    for d in opts.detectors:
        names = [r for r in opts.runs_of(d, list(timings)) if r in timings]
        unique = {timings[r]["_dir"]: timings[r] for r in names}.values()
        out[d] = {
            "runs": float(len(unique)),
            "example_epochs": float(sum(t["n_train"] * t["epochs"] for t in unique)),
            "train_s": float(sum(t["wall_s"] for t in unique)),
            "score_s": float(scoring_s.get(d, 0.0)),
        }
        out[d]["total_s"] = out[d]["train_s"] + out[d]["score_s"]
    return out


def _bool_mask(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or arr.dtype != bool:
        raise DataError(f"{name}: need {n} booleans (one per training example), got {arr.dtype} of shape {arr.shape}")
    return arr.copy()


def _class_array(name: str, values: Any, n: int, k: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or (arr.size and arr.dtype.kind not in "iu"):
        raise DataError(f"{name}: need {n} integer classes (one per training example), got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise DataError(f"{name}: classes must be in [0, {k})")
    return arr


def detect_label_issues(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    given_labels: Any = None,
    true_labels: Any = None,
    scored: Any = None,
    **options: Any,
) -> DetectionResult:
    """Run the chosen detectors on the training split of ``cfg`` and return scores and flags.

    Args:
        cfg: the run config (model, data, method, training, and optionally ``noise`` to plant errors with a
            known truth). Tracking settings are set per run; adapters are not saved.
        out_dir: directory for the training runs (``<out_dir>/<run name>/``).
        given_labels: labels to train and score on instead of the config's (aligned with its training split),
            e.g. ChaosNLI's original labels (:func:`~kss_lora.detect.human.chaosnli_human_labels`).
        true_labels: with ``given_labels``, the labels believed right (e.g. ChaosNLI's 100-vote majority); the
            truth mask is then ``given_labels != true_labels``. Planted noise (``cfg.noise``) brings its own.
        scored: boolean mask over the training split, True on the rows whose truth is known (default: all).
            Every row is trained on and scored; the evaluation reads only these rows. E.g. ChaosNLI items
            pooled with bulk NLI rows, whose labels have no 100-vote check (:func:`~kss_lora.detect.human`).
        **options: fields of :class:`DetectOptions` (``detectors``, ``low_rank``, ``high_rank``, ``folds``,
            ``rate``...).
    """
    opts = DetectOptions(**options).validate()
    out = Path(out_dir)
    cfg = copy.deepcopy(cfg).validate()
    need = {NEEDS[d] for d in opts.detectors}
    from kss_lora.methods.registry import LORA_METHODS

    if ("ranks" in need or "dual" in need) and cfg.method.name not in LORA_METHODS:
        raise ConfigError(
            "method.name",
            f"RACT compares LoRA ranks (dual-lora trains two adapters); needs a LoRA method, got {cfg.method.name!r}",
        )
    if true_labels is not None and given_labels is None:
        raise ConfigError("true_labels", "true labels from outside the config go with given_labels")

    probe = prepare(configure(cfg, track=False))  # data, noise and labels every run will see
    split = probe.data.train
    labels = probe.train_batches.labels.copy()
    ids = probe.train_batches.ids.copy()
    k = probe.data.num_labels
    label_names = list(probe.data.label_names)
    is_noisy = None if probe.is_noisy is None else probe.is_noisy.copy()
    clean = probe.task.clean_train_labels.copy() if is_noisy is not None else None
    del probe
    if given_labels is not None:
        if is_noisy is not None:
            raise ConfigError("noise.rate", "given_labels replace the training labels: plant no noise with them")
        labels = _class_array("given_labels", given_labels, labels.size, k)
        if true_labels is not None:
            clean = _class_array("true_labels", true_labels, labels.size, k)
            is_noisy = labels != clean
    if np.unique(labels).size < 2:
        raise KSSError("detect: the training split needs at least two classes")
    known = None
    if scored is not None:
        if is_noisy is None:
            raise ConfigError("scored", "a mask of rows with a known truth needs a truth (true_labels or noise)")
        known = _bool_mask("scored", scored, labels.size)
        if not known.any():
            raise DataError("scored: no row is marked as having a known truth")

    ctx = _Ctx(cfg, out, opts, labels, given_labels is not None)
    ctx.res.update(runs={}, run_results={}, extras={}, fold_train_ids=[], fold_scored_ids=[], folds=None)
    res = ctx.res
    scores: dict[str, np.ndarray] = {}
    flags: dict[str, np.ndarray] = {}
    scoring_s: dict[str, float] = {}
    oos_probs = None
    if "folds" in need:
        oos_probs = _cross_fit(ctx)

    ref = low = high = None
    if "reference" in need or "dual" in need:
        ref = _full_run(ctx, "reference")
    if "ranks" in need:
        # A rank equal to the config's own reuses the reference run (same config, same seed: same model).
        low = ref if ref is not None and opts.low_rank == cfg.method.rank else None
        low = low or _full_run(ctx, "rank-low", rank=opts.low_rank, auxiliary=True)
        same_lr = opts.high_rank_lr is None or opts.high_rank_lr == cfg.train.lr
        high = ref if ref is not None and opts.high_rank == cfg.method.rank and same_lr else None
        high = high or _full_run(ctx, "rank-high", rank=opts.high_rank, lr=opts.high_rank_lr, auxiliary=True)
    for name, t in (("reference", ref), ("rank-low", low), ("rank-high", high)):
        if t is not None and name not in res["runs"]:
            ctx.record(name, t)
            if not np.array_equal(t.run.train_batches.labels, labels):
                raise KSSError(f"detect: run {name} trained on different labels than the others (noise seed?)")

    # Noise-rate estimate (no oracle) and the label a reviewer is offered instead.
    final_probs = early_probs = None
    for t in (low, ref, high):
        if t is not None:
            final_probs, early_probs = _in_sample_probs(t)
            break
    if opts.rate is not None:
        rate, source = float(opts.rate), "given"
    elif oos_probs is not None:
        rate, source = estimate_noise_rate(labels, oos_probs), f"confident joint, {opts.folds}-fold cross-fitted"
    else:
        assert early_probs is not None
        which = f"rank {opts.low_rank}" if low is not None else "reference"
        rate = estimate_noise_rate(labels, early_probs[:, :k])
        source = f"confident joint, in-sample ({which} model, first epoch end)"
    suggest_probs = oos_probs if oos_probs is not None else final_probs
    assert suggest_probs is not None or "aum" in need
    n_flag = int(round(rate * labels.size))

    t0 = time.perf_counter()
    if "confident-learning" in opts.detectors:
        from cleanlab.filter import find_label_issues

        assert oos_probs is not None
        scores["confident-learning"] = S.self_confidence_scores(labels, oos_probs)
        # n_jobs=1: cleanlab's per-class pool shares data through fork-inherited globals, which fails
        # (NameError) in processes whose start method is spawn; K classes need no parallelism anyway.
        flags["confident-learning"] = find_label_issues(labels, oos_probs, filter_by="prune_by_noise_rate", n_jobs=1)
    scoring_s["confident-learning"] = time.perf_counter() - t0
    ref_traj = _trajectories(ref) if ref is not None else None
    if ref_traj is not None:
        one_run = [d for d in S.SINGLE_RUN if d in opts.detectors]
        scores.update(S.single_run_scores(ref_traj.loss, ref_traj.prob, ref_traj.correct, detectors=one_run))
        if "cartography" in opts.detectors:
            trained_part = S._as_traj("p", _after_start(ref_traj.prob))
            res["extras"]["cartography_hard_to_learn"] = S.hard_to_learn(trained_part, _after_start(ref_traj.correct))
    lo_traj = hi_traj = None
    if low is not None and high is not None:
        lo_traj, hi_traj = _trajectories(low), _trajectories(high)
        lo, hi = lo_traj.loss, hi_traj.loss
        d = S.rank_discrepancy_scores(lo, hi, reduce="mean")
        ract = {
            "ract": d,
            "ract-neg": -d,
            "ract-final": S.rank_discrepancy_scores(lo, hi, reduce="final"),
            "ract-low": S.small_loss_scores(lo, reduce="final"),
        }
        for name in ract:
            if name in opts.detectors:
                scores[name] = ract[name]
        if "ract-curriculum" in opts.detectors:
            scores["ract-curriculum"] = _curriculum(ctx, low, ract[opts.curriculum_seed], n_flag)
    aum_passes: list[tuple[Any, np.ndarray]] = []
    if "aum" in need:
        scores["aum"], flags["aum"], aum_passes = _aum(ctx, k)
    if "dual" in need:
        from .dual_lora import dual_lora_scores

        assert ref_traj is not None
        scores["dual-lora"], flags["dual-lora"], extra = dual_lora_scores(
            cfg,
            out,
            labels,
            ref_traj.loss[-1],
            n_flag,
            prep=ctx.prep,
            record=ctx.record,
            noisy_on=opts.dual_noisy,
            epochs=opts.dual_epochs,
            eval_examples=opts.eval_examples,
        )
        res["extras"].update(extra)
    for d in opts.detectors:
        flags.setdefault(d, S.flag_top(scores[d], count=n_flag))

    curves: list[dict[str, Any]] = []
    if is_noisy is not None:
        t0 = time.perf_counter()
        curves = _curves(is_noisy, opts, ref, low, high, ref_traj, lo_traj, hi_traj, aum_passes, known)
        res["extras"]["curves_s"] = time.perf_counter() - t0

    if suggest_probs is None:
        suggested = labels.copy()
    else:
        suggested = suggest_probs[:, :k].argmax(axis=1)
    # Default ranking for the CSV: confident learning (out-of-sample, established) when run; not SPEC's
    # `ract`, whose sign depends on the training regime (docs/detection.md).
    primary = opts.primary or ("confident-learning" if "confident-learning" in opts.detectors else opts.detectors[0])
    costs = _costs(opts, ctx.timings, scoring_s)
    near_prior = {d: runs_near_prior(ctx.health, opts.runs_of(d, list(ctx.health))) for d in opts.detectors}
    timings = {name: {k2: v for k2, v in t.items() if k2 != "_dir"} for name, t in ctx.timings.items()}
    return DetectionResult(
        ids=ids,
        texts=list(split.texts),
        text_pairs=split.text_pairs,
        labels=labels,
        label_names=label_names,
        scores={d: scores[d] for d in opts.detectors},
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
        curves=curves,
        timings=timings,
        costs=costs,
        run_health=ctx.health,
        near_prior=near_prior,
        scored=known,
    )


def _curves(
    truth: np.ndarray,
    opts: DetectOptions,
    ref: Trained | None,
    low: Trained | None,
    high: Trained | None,
    ref_traj: Any,
    lo_traj: Any,
    hi_traj: Any,
    aum_passes: list[tuple[Any, np.ndarray]],
    known: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Per-checkpoint detector metrics and fitted shares (:mod:`.curves`) from the recorded trajectories,
    over the rows whose truth is ``known`` (None: all)."""
    m = np.ones(truth.size, dtype=bool) if known is None else known
    grids: dict[str, tuple[np.ndarray, int]] = {}
    correct: dict[str, np.ndarray] = {}
    for name, t, traj in (("reference", ref, ref_traj), ("rank-low", low, lo_traj), ("rank-high", high, hi_traj)):
        if t is None or traj is None:
            continue
        dyn = t.dynamics()
        grids[name] = (np.asarray(dyn.ckpt_step), int(dyn.arrays["steps_per_epoch"]))
        correct[name] = traj.correct[:, m]
    rows = fitted_curves(truth[m], correct, {n: g[0] for n, g in grids.items()}, {n: g[1] for n, g in grids.items()})
    if not grids:
        return rows
    steps, spe = next(iter(grids.values()))
    if any(not np.array_equal(g[0], steps) for g in grids.values()):
        return rows  # different checkpoint grids: per-checkpoint detector curves are not comparable
    usable_aum = [(tr, kept) for tr, kept in aum_passes if tr.loss.shape[0] == steps.size]
    scorers = prefix_scorers(ref_traj, lo_traj, hi_traj, usable_aum)
    if known is not None:
        scorers = {name: (lambda t, f=f: f(t)[m]) for name, f in scorers.items()}
    return rows + detector_curves(truth[m], scorers, steps, spe, detectors=opts.detectors)
