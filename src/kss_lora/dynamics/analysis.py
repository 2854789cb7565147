"""Reading a run's dynamics into per-example tables, and the annotation-entropy analysis (Steele).

Two uses, one loader:

- :func:`run_tables` turns one run directory into per-example tables (training items and held-out items):
  AULC, learning time, un-learning, cartography, forgetting events, AUM. ``kss dynamics`` writes them.
- :func:`entropy_analysis` joins the AULC of ChaosNLI items (held-out and in-training) with their
  annotation entropy across many runs and tests Steele's claim (Spearman rho 0.06-0.43, positive in all
  conditions; LoRA "un-learns" contested items, full fine-tuning does not). ``kss entropy`` writes it.

Time axes, and why they differ: AULC, learning time and un-learning use *every* checkpoint (step 0, every
``tracking.every_steps`` and each epoch end), as Steele's protocol does; cartography, forgetting events
and AUM are defined over *epochs* (Swayamdipta et al.; Toneva et al.; Pleiss et al.), so they use the
epoch-end checkpoints only. With ``source='free'`` every quantity uses the per-epoch training-pass
outputs (no extra compute, but dropout/mask noise and a different step per example).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kss_lora.errors import ConfigError, DataError

from .capacity import TemporalSeparation, lora_capacity, lora_target_shapes, temporal_separation
from .entropy import BUCKETS, load_chaosnli
from .metrics import (
    LN2,
    ExampleOutputs,
    aulc,
    aum,
    cartography,
    forgetting_events,
    learning_time,
    unlearning,
)
from .records import DYNAMICS_NAME, Dynamics, load_dynamics
from .stats import delta_by_bucket, hierarchical_r2, partial_spearman, spearman_with_ci

__all__ = [
    "PAPER_RHO_RANGE",
    "SOURCES",
    "EntropyReport",
    "RunInfo",
    "chaosnli_items",
    "correlate",
    "entropy_analysis",
    "entropy_markdown",
    "find_runs",
    "item_frame",
    "load_run",
    "optimal_rank",
    "run_capacity",
    "run_separation",
    "run_tables",
]

SOURCES = ("checkpoint", "free")
PAPER_RHO_RANGE = (0.06, 0.43)
"""Steele's reported Spearman rho between annotation entropy and AULC, over 25 conditions."""


# ----------------------------------------------------------------------------------------- one run


@dataclass
class RunInfo:
    """A run directory with its resolved config, result and recorded dynamics."""

    run_dir: Path
    config: dict[str, Any]
    result: dict[str, Any] | None
    dynamics: Dynamics

    def get(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (``"method.name"``); ``default`` when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def is_chaosnli(self) -> bool:
        return self.get("data.source") == "chaosnli"

    @property
    def method(self) -> str:
        return str(self.get("method.preset") or self.get("method.name", "?"))

    @property
    def uses_lora(self) -> bool:
        return self.get("method.name") not in ("full-ft", "childtuning-f")

    @property
    def condition(self) -> str:
        """What the run measures apart from its seed: model, method, (for LoRA) rank, learning rate, noise.

        The learning rate is part of it because runs of one method at two learning rates are two
        conditions (under Adam, LoRA's lr and gamma both scale the update), never seeds of one.
        """
        rank = f" r={self.get('method.rank')}" if self.uses_lora else ""
        lr = self.get("train.lr")
        noise = self.get("noise.rate") or 0.0
        return (
            f"{self.get('model.name')} {self.method}{rank}"
            + (f" lr={float(lr):g}" if lr is not None else "")
            + (f" noise={noise:g}" if noise else "")
        )

    @property
    def seed(self) -> int | None:
        return self.get("train.seed")


def load_run(run_dir: str | Path) -> RunInfo:
    """Read a run directory; a missing directory, config or dynamics file is a one-line :class:`DataError`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{path}: no such run directory")
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise DataError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError:
        raise DataError(f"{cfg_path}: cannot parse the run's config") from None
    result = None
    result_path = path / "result.json"
    if result_path.is_file():
        import json

        try:
            result = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            result = None
    try:
        dynamics = load_dynamics(path)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path / DYNAMICS_NAME}: unreadable ({exc})") from None
    return RunInfo(path, config, result, dynamics)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly, or the run directories one level below a named folder.

    Why: ``kss entropy runs/dynamics/entropy`` should analyse every run a sweep or driver wrote there.
    A folder with neither ``dynamics.npz`` nor run directories below it is an error.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise DataError(f"{p}: no such run directory")
        if (p / "config.yaml").is_file():
            out.append(p)
            continue
        below = sorted(c for c in p.iterdir() if c.is_dir() and (c / DYNAMICS_NAME).is_file())
        if not below:
            raise DataError(f"{p}: neither a run directory nor a folder of runs with {DYNAMICS_NAME}")
        out.extend(below)
    return out


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
    from .metrics import per_example_from_logits

    logits = dyn.arrays["heldout_logits"][dyn.epoch_end]
    return per_example_from_logits(logits, np.broadcast_to(dyn.arrays["heldout_labels"], logits.shape[:2]))


def _join_items(table: pd.DataFrame, items: pd.DataFrame | None) -> pd.DataFrame:
    if items is None:
        return table
    cols = ["uid", "entropy_nats", "bucket", "text_words"]
    extra = items.iloc[table["id"].to_numpy()][cols].reset_index(drop=True)
    return pd.concat([table.reset_index(drop=True), extra], axis=1)


def _resolve_data_path(run: RunInfo, raw: str) -> Path | None:
    """Data paths in a config are relative to the directory the run started from (usually the project
    root); try the current directory, then the run directory's ancestors (runs live below the root)."""
    p = Path(raw)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path.cwd(), *run.run_dir.resolve().parents):
        if (base / p).is_file():
            return base / p
    return None


def chaosnli_items(run: RunInfo, which: str, *, required: bool = True) -> pd.DataFrame | None:
    """The ChaosNLI rows behind a run's training (``which='train'``) or held-out items, in file order.

    Item ids recorded by the runner are row numbers of that file, so ``items.iloc[ids]`` lines them up.
    """
    key = "data.train" if which == "train" else "tracking.heldout"
    raw = run.get(key)
    if not raw:
        if required:
            raise DataError(f"{run.run_dir}: the run has no {key}")
        return None
    path = _resolve_data_path(run, str(raw))
    if path is None:
        if required:
            raise DataError(
                f"{run.run_dir}: {key} file {raw!r} not found (paths are relative to the "
                "directory the run was started from; run this command from there)"
            )
        return None
    items = load_chaosnli(path)
    ids = run.dynamics.arrays["ids" if which == "train" else "heldout_ids"]
    if len(ids) and int(ids.max()) >= len(items):
        raise DataError(
            f"{path}: has {len(items)} items but the run tracked item id {int(ids.max())}; "
            "the file changed since the run"
        )
    return items


# --------------------------------------------------------------------------- capacity and separation


def _skeleton(run: RunInfo, *, trust_remote_code: bool = False) -> Any:
    """The run's base model with no weights (meta device): enough to read the adapted matrices' shapes.

    ``trust_remote_code`` comes from the analysing command's own flag, never from the run's config.yaml:
    analysing someone else's run directory must not run code it names.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..models import _tiny_config, minilm_path, smollm2_path

    name = str(run.get("model.name"))
    if name in ("tiny-bert", "tiny-llama"):
        config = _tiny_config(name, vocab_size=30522)  # the vocabulary does not change attention shapes
    else:
        path = {"minilm": minilm_path, "smollm2-135m": smollm2_path}.get(name, lambda: name)()
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    classification = run.get("model.task", "classification") == "classification"
    if classification:
        config.num_labels = int(run.dynamics.arrays["ckpt_logits"].shape[-1])
    auto = AutoModelForSequenceClassification if classification else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def run_capacity(run: RunInfo, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """LoRA capacity ``sum r(d + k - r)`` over the run's adapted matrices vs its training-set size.

    The shapes come from a weightless (meta-device) copy of the model built from its config, so this costs
    a second, not a model load. Full fine-tuning has no rank bound: ``capacity`` is then None.
    """
    n_train = len(run.dynamics.labels)
    out: dict[str, Any] = {
        "method": run.method,
        "n_train": n_train,
        "capacity": None,
        "rank": None,
        "matrices": 0,
        "line": "",
    }
    if not run.uses_lora:
        out["line"] = (
            f"LoRA capacity: n/a ({run.get('method.name')} updates full matrices, no rank bound); "
            f"{n_train} training examples"
        )
        return out
    rank = int(run.get("method.rank", 8))
    try:
        model = _skeleton(run, trust_remote_code=trust_remote_code)
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

        from ..methods import default_targets

        targets = (
            run.get("method.target_modules")
            or default_targets(model)
            or PEFT_TARGETS.get(getattr(model.config, "model_type", ""))
        )
        if not targets:
            raise ConfigError("method.target_modules", "unknown for this architecture")
        shapes = lora_target_shapes(model, target_modules=list(targets))
    except Exception as exc:  # capacity is a side note: never fail the table for it
        out["line"] = f"LoRA capacity: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        return out
    cap = lora_capacity(shapes.values(), rank)
    binds = "exceeds" if n_train > cap else "is below"
    out.update(
        capacity=cap,
        rank=rank,
        matrices=len(shapes),
        targets=list(targets),
        ratio=cap / n_train if n_train else math.inf,
        line=(
            f"LoRA capacity: sum r(d+k-r) = {cap:,} over {len(shapes)} adapted matrices (r={rank}); "
            f"training set {n_train:,} examples {binds} it (capacity/N = {cap / n_train:.1f})"
        ),
    )
    return out


def run_separation(run: RunInfo, source: str = "checkpoint") -> tuple[TemporalSeparation, np.ndarray] | None:
    """Clean vs noisy fitted fractions over time (x in epochs), or None when no noise was injected."""
    dyn = run.dynamics
    if dyn.is_noisy is None or dyn.is_noisy.all() or not dyn.is_noisy.any():
        return None
    every, _, x = _outputs(run, source)
    return temporal_separation(every.correct, dyn.is_noisy), x


# ------------------------------------------------------------------------------- entropy analysis


def item_frame(run: RunInfo, which: str) -> pd.DataFrame | None:
    """Per-item AULC, Δℓ and initial loss against ChaosNLI's majority label, joined with entropy.

    ``which`` is ``"heldout"`` (never trained on: Steele's tracked items) or ``"train"`` (in-training
    items, scored against the *clean* majority label even if noise was injected). None if not tracked.
    """
    dyn = run.dynamics
    if which == "heldout":
        out = dyn.heldout()
        if out is None:
            return None
        ids = dyn.arrays["heldout_ids"]
    else:
        out = dyn.checkpoint(labels=dyn.clean_labels)
        ids = dyn.arrays["ids"]
    items = chaosnli_items(run, which)
    rows = items.iloc[ids]
    prior = np.bincount(dyn.clean_labels, minlength=int(dyn.arrays["ckpt_logits"].shape[-1])) / len(dyn.clean_labels)
    majority = rows["majority_label"].to_numpy()
    return pd.DataFrame(
        {
            "uid": rows["uid"].to_numpy(),
            "entropy": rows["entropy_nats"].to_numpy(),
            "majority_label": np.asarray(items.attrs.get("label_names", list(range(len(prior)))), dtype=object)[
                majority
            ],
            "prior_loss": -np.log(np.maximum(prior[majority], 1e-12)),
            "bucket": rows["bucket"].to_numpy(),
            "text_words": rows["text_words"].to_numpy(),
            "aulc": aulc(out.loss),
            "loss_initial": out.loss[0],
            "unlearning": unlearning(out.loss),
            "final_correct": out.correct[-1],
        }
    )


def correlate(
    entropy: Any, aulc_values: Any, confounders: Any, *, n_boot: int = 1000, seed: int = 0, extra: Any = None
) -> dict[str, float]:
    """Spearman rho(H, AULC) with bootstrap CI, partial rho given the confounders, and ΔR² of entropy.

    The ΔR² is on ranks (a Spearman-style hierarchical regression): how much of AULC's rank variance
    entropy explains beyond the confounders' ranks. ``extra`` (optional ``[n]`` or ``[n, j]``) adds a
    second partial rho controlling for the confounders *and* these columns (``partial_rho_extra``).
    """
    from scipy.stats import rankdata

    h = np.asarray(entropy, dtype=float)
    a = np.asarray(aulc_values, dtype=float)
    z = np.asarray(confounders, dtype=float).reshape(len(h), -1)
    sp = spearman_with_ci(h, a, n_boot=n_boot, seed=seed)
    pa = partial_spearman(h, a, z, n_boot=n_boot, seed=seed)
    hr = hierarchical_r2(rankdata(a), np.column_stack([rankdata(c) for c in z.T]), rankdata(h))
    out = {
        "n": sp.n,
        "rho": sp.rho,
        "p": sp.p,
        "ci_low": sp.ci_low,
        "ci_high": sp.ci_high,
        "partial_rho": pa.rho,
        "partial_p": pa.p,
        "partial_ci_low": pa.ci_low,
        "partial_ci_high": pa.ci_high,
        "delta_r2": hr.delta_r2,
        "delta_r2_p": hr.p_value,
    }
    if extra is not None:
        zx = np.column_stack([z, np.asarray(extra, dtype=float).reshape(len(h), -1)])
        px = partial_spearman(h, a, zx, n_boot=0)
        out.update(partial_rho_extra=px.rho, partial_p_extra=px.p)
    return out


@dataclass
class EntropyReport:
    """Everything ``kss entropy`` writes: per-run and per-condition correlations, Δℓ per bucket, the
    LoRA vs full fine-tuning comparison on contested items, and the items behind them (for plots)."""

    per_run: pd.DataFrame
    per_condition: pd.DataFrame
    delta: pd.DataFrame
    lora_vs_full: pd.DataFrame
    items: pd.DataFrame
    by_label: pd.DataFrame = field(default_factory=pd.DataFrame)
    trajectories: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


CONFOUNDERS = ("text_words", "loss_initial")
PRIOR = "prior_loss"
"""-ln (training frequency of the item's majority label): the loss of a model that learned only the label
prior. A weakly trained model's AULC is mostly this, and contested items may have rarer majority labels,
so the report adds a partial rho that also controls for it."""


def entropy_analysis(runs: Sequence[RunInfo], *, n_boot: int = 1000, seed: int = 0) -> EntropyReport:
    """Steele's analysis over runs trained on ChaosNLI (see the module docstring).

    Per run and item set (held-out, in-training): Spearman rho(H, AULC) with a bootstrap CI, partial rho
    controlling for text length and initial loss, ΔR². Per condition (model, method, rank; seeds pooled by
    averaging each item's AULC and Δℓ over seeds first): the same statistics, Δℓ per entropy bucket, and,
    per model, LoRA vs full fine-tuning on contested items (paired over items, bootstrap CI).
    """
    rows, frames, notes = [], [], []
    trajectories: dict[tuple[str, str], pd.DataFrame] = {}
    for run in runs:
        if not run.is_chaosnli:
            notes.append(f"skipped {run.run_dir.name}: data.source is {run.get('data.source')!r}, not chaosnli")
            continue
        if run.result is not None and run.result.get("status") not in (None, "ok"):
            notes.append(f"skipped {run.run_dir.name}: status {run.result.get('status')}")
            continue
        for which in ("heldout", "train"):
            frame = item_frame(run, which)
            if frame is None:
                continue
            stats = correlate(
                frame["entropy"], frame["aulc"], frame[list(CONFOUNDERS)], n_boot=n_boot, seed=seed, extra=frame[PRIOR]
            )
            acc = float(frame["final_correct"].mean())
            rows.append(
                {
                    "run": run.run_dir.name,
                    "condition": run.condition,
                    "model": run.get("model.name"),
                    "method": run.method,
                    "lora": run.uses_lora,
                    "seed": run.seed,
                    "items": which,
                    "final_accuracy": acc,
                    **stats,
                }
            )
            frames.append(
                frame.assign(
                    run=run.run_dir.name,
                    condition=run.condition,
                    items=which,
                    model=run.get("model.name"),
                    lora=run.uses_lora,
                )
            )
            trajectories[(run.run_dir.name, which)] = _bucket_trajectory(run, which, frame["bucket"].to_numpy())
    if not rows:
        raise DataError(
            "no usable runs: entropy analysis needs runs with data.source: chaosnli and dynamics"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    per_run = pd.DataFrame(rows)
    items = pd.concat(frames, ignore_index=True)
    per_condition, delta = _per_condition(items, per_run, n_boot, seed)
    return EntropyReport(
        per_run=per_run,
        per_condition=per_condition,
        delta=delta,
        lora_vs_full=_lora_vs_full(items, n_boot, seed),
        items=items,
        by_label=_by_label(items),
        trajectories=trajectories,
        notes=notes,
    )


def _by_label(items: pd.DataFrame) -> pd.DataFrame:
    """Entropy, AULC and Δℓ per majority label: exposes a model that learned only the label prior
    (then every item of the disfavoured class "un-learns", whatever its entropy)."""
    return (
        items.groupby(["condition", "items", "majority_label"], sort=False)
        .agg(
            n=("aulc", "size"),
            mean_entropy=("entropy", "mean"),
            mean_aulc=("aulc", "mean"),
            mean_unlearning=("unlearning", "mean"),
            frac_unlearned=("unlearning", lambda v: float((v > 0).mean())),
            final_accuracy=("final_correct", "mean"),
        )
        .reset_index()
    )


def _bucket_trajectory(run: RunInfo, which: str, buckets: np.ndarray) -> pd.DataFrame:
    """Mean loss per entropy bucket at each checkpoint (x in epochs): the un-learning picture."""
    dyn = run.dynamics
    loss = dyn.heldout().loss if which == "heldout" else dyn.checkpoint(labels=dyn.clean_labels).loss
    x = dyn.ckpt_step / int(dyn.arrays["steps_per_epoch"])
    return pd.DataFrame(
        {b: loss[:, buckets == b].mean(axis=1) if (buckets == b).any() else np.nan for b in BUCKETS},
        index=pd.Index(x, name="epoch"),
    )


def _seed_mean(items: pd.DataFrame) -> pd.DataFrame:
    keys = ["condition", "items", "uid"]
    return (
        items.groupby(keys, sort=False)
        .agg(
            entropy=("entropy", "first"),
            bucket=("bucket", "first"),
            text_words=("text_words", "first"),
            model=("model", "first"),
            lora=("lora", "first"),
            aulc=("aulc", "mean"),
            prior_loss=("prior_loss", "mean"),
            loss_initial=("loss_initial", "mean"),
            unlearning=("unlearning", "mean"),
            seeds=("run", "nunique"),
        )
        .reset_index()
    )


def _per_condition(
    items: pd.DataFrame, per_run: pd.DataFrame, n_boot: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    pooled = _seed_mean(items)
    rows, deltas = [], []
    for (cond, which), g in pooled.groupby(["condition", "items"], sort=False):
        stats = correlate(g["entropy"], g["aulc"], g[list(CONFOUNDERS)], n_boot=n_boot, seed=seed, extra=g[PRIOR])
        seeds = per_run[(per_run["condition"] == cond) & (per_run["items"] == which)]["rho"]
        lo, hi = PAPER_RHO_RANGE
        rows.append(
            {
                "condition": cond,
                "items": which,
                "model": g["model"].iloc[0],
                "lora": bool(g["lora"].iloc[0]),
                "runs": int(g["seeds"].max()),
                "rho_seed_mean": float(seeds.mean()),
                "rho_seed_std": float(seeds.std(ddof=1)) if len(seeds) > 1 else float("nan"),
                "rho_seed_min": float(seeds.min()),
                "rho_seed_max": float(seeds.max()),
                **stats,
                "in_paper_range": bool(lo <= stats["rho"] <= hi),
            }
        )
        d = delta_by_bucket(g["unlearning"].to_numpy(), g["bucket"].to_numpy(), order=BUCKETS).reset_index()
        pos = g.groupby("bucket")["unlearning"].apply(lambda s: float((s > 0).mean()))
        d["frac_unlearned"] = d["bucket"].map(pos)
        deltas.append(d.assign(condition=cond, items=which))
    delta = pd.concat(deltas, ignore_index=True)[
        ["condition", "items", "bucket", "count", "mean", "std", "sem", "frac_unlearned"]
    ]
    return pd.DataFrame(rows), delta


def _lora_vs_full(items: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per model and item set: Δℓ on contested items, each LoRA condition vs full fine-tuning, paired by item."""
    pooled = _seed_mean(items)
    pooled = pooled[pooled["bucket"] == "contested"]
    rows = []
    for (model, which), g in pooled.groupby(["model", "items"], sort=False):
        full = g[~g["lora"]]
        for cond_full, f in full.groupby("condition", sort=False):
            for cond_lora, lo in g[g["lora"]].groupby("condition", sort=False):
                both = lo.set_index("uid")[["unlearning"]].join(
                    f.set_index("uid")[["unlearning"]], how="inner", lsuffix="_lora", rsuffix="_full"
                )
                if both.empty:
                    continue
                diff = (both["unlearning_lora"] - both["unlearning_full"]).to_numpy()
                ci = _mean_ci(diff, n_boot, seed)
                rows.append(
                    {
                        "model": model,
                        "items": which,
                        "lora": cond_lora,
                        "full": cond_full,
                        "n_contested": len(both),
                        "delta_lora": float(both["unlearning_lora"].mean()),
                        "delta_full": float(both["unlearning_full"].mean()),
                        "frac_unlearned_lora": float((both["unlearning_lora"] > 0).mean()),
                        "frac_unlearned_full": float((both["unlearning_full"] > 0).mean()),
                        "diff": float(diff.mean()),
                        "diff_ci_low": ci[0],
                        "diff_ci_high": ci[1],
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "items",
            "lora",
            "full",
            "n_contested",
            "delta_lora",
            "delta_full",
            "frac_unlearned_lora",
            "frac_unlearned_full",
            "diff",
            "diff_ci_low",
            "diff_ci_high",
        ],
    )


def _mean_ci(values: np.ndarray, n_boot: int, seed: int, ci: float = 0.95) -> tuple[float, float]:
    if n_boot == 0 or len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    a = (1 - ci) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------- Markdown


def _f(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def entropy_markdown(report: EntropyReport) -> str:
    """Markdown tables: each condition's rho next to the paper's range, per-run rows, Δℓ per bucket,
    LoRA vs full fine-tuning on contested items."""
    lo, hi = PAPER_RHO_RANGE
    out = [
        f"Paper (Steele): Spearman ρ(H, AULC) = {lo}–{hi}, positive in all 25 conditions.",
        "",
        "### Per condition (seeds pooled: each item's AULC averaged over seeds)",
        "",
        "Partial ρ controls for text length and initial loss (Steele's confounders); partial ρ + prior also "
        "controls for −ln(training frequency of the majority label), the loss of a model that learned only "
        "the label prior. ΔR²: rank variance of AULC explained by entropy beyond length and initial loss.",
        "",
        "| condition | items | runs | n | ρ [95% CI] | per-seed ρ mean ± sd | partial ρ | partial ρ + prior "
        "| ΔR² | paper | in range |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.per_condition.itertuples():
        out.append(
            f"| {r.condition} | {r.items} | {r.runs} | {r.n} | {_f(r.rho)} [{_f(r.ci_low)}, {_f(r.ci_high)}] "
            f"| {_f(r.rho_seed_mean)} ± {_f(r.rho_seed_std)} | {_f(r.partial_rho)} (p={r.partial_p:.2g}) "
            f"| {_f(r.partial_rho_extra)} (p={r.partial_p_extra:.2g}) "
            f"| {_f(r.delta_r2, 4)} | {lo}–{hi} | {'yes' if r.in_paper_range else 'no'} |"
        )
    out += [
        "",
        "### Per run",
        "",
        "| run | condition | seed | items | n | final acc | ρ [95% CI] | p | partial ρ [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.per_run.itertuples():
        out.append(
            f"| {r.run} | {r.condition} | {r.seed} | {r.items} | {r.n} | {_f(r.final_accuracy)} "
            f"| {_f(r.rho)} [{_f(r.ci_low)}, {_f(r.ci_high)}] | {r.p:.2g} "
            f"| {_f(r.partial_rho)} [{_f(r.partial_ci_low)}, {_f(r.partial_ci_high)}] |"
        )
    out += [
        "",
        "### Un-learning Δℓ = loss_final − loss_initial per entropy bucket (mean ± sem; share with Δℓ > 0)",
        "",
        "| condition | items | bucket | n | Δℓ | sem | share un-learned |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.delta.itertuples():
        out.append(
            f"| {r.condition} | {r.items} | {r.bucket} | {r.count} | {_f(r.mean)} | {_f(r.sem)} "
            f"| {_f(r.frac_unlearned, 2)} |"
        )
    if not report.lora_vs_full.empty:
        out += [
            "",
            "### Contested items: LoRA vs full fine-tuning (paired by item; bootstrap 95% CI of the mean difference)",
            "",
            "| model | items | LoRA | full FT | n | Δℓ LoRA | Δℓ full | share un-learned LoRA / full | diff [95% CI] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report.lora_vs_full.itertuples():
            out.append(
                f"| {r.model} | {r.items} | {r.lora} | {r.full} | {r.n_contested} | {_f(r.delta_lora)} "
                f"| {_f(r.delta_full)} | {_f(r.frac_unlearned_lora, 2)} / {_f(r.frac_unlearned_full, 2)} "
                f"| {_f(r.diff)} [{_f(r.diff_ci_low)}, {_f(r.diff_ci_high)}] |"
            )
    if not report.by_label.empty:
        out += [
            "",
            "### Per majority label (all seeds' items pooled): does the label prior drive it?",
            "",
            "| condition | items | majority label | n | mean H | mean AULC | Δℓ | share un-learned | final acc |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report.by_label.itertuples():
            out.append(
                f"| {r.condition} | {r.items} | {r.majority_label} | {r.n} | {_f(r.mean_entropy)} "
                f"| {_f(r.mean_aulc)} | {_f(r.mean_unlearning)} | {_f(r.frac_unlearned, 2)} "
                f"| {_f(r.final_accuracy, 2)} |"
            )
    if report.notes:
        out += ["", *(f"- {n}" for n in report.notes)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ optimal rank


RANK_METRICS = {"val_loss": "min", "val_accuracy": "max", "gap_clean": "min", "test_accuracy": "max"}


def optimal_rank(results: Sequence[dict[str, Any]], *, metric: str = "val_loss") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best LoRA rank per noise rate from finished runs' ``result.json`` contents.

    Why a separate summary: the theory (Steele) predicts the optimal rank *decreases* with the noise
    rate; the sweep's per-condition statistics show each (rank, noise) cell but not the arg-best per row.
    Returns ``(cells, best)``: mean/std/n of ``metric`` per (noise_rate, rank), and per noise rate the best
    rank with its mean and the ranks whose mean lies within one standard error of the best (ties in effect).
    Only LoRA-family runs with ``status: ok`` count. ``metric`` is judged on clean labels: validation and
    test sets are never corrupted (docs/spec.md §2), so ``val_loss`` is a clean quantity.
    """
    if metric not in RANK_METRICS:
        raise ConfigError("--metric", f"unknown value {metric!r}; allowed: {', '.join(RANK_METRICS)}")
    rows = [
        r
        for r in results
        if r.get("status") == "ok"
        and r.get("rank") is not None
        and r.get("method") not in ("full-ft", "childtuning-f")
        and r.get(metric) is not None
    ]
    if not rows:
        raise DataError(f"no finished LoRA runs with {metric} to compare")
    frame = pd.DataFrame(
        {
            "noise_rate": [float(r.get("noise_rate") or 0.0) for r in rows],
            "rank": [int(r["rank"]) for r in rows],
            metric: [float(r[metric]) for r in rows],
        }
    )
    cells = frame.groupby(["noise_rate", "rank"])[metric].agg(["mean", "std", "count"]).reset_index()
    cells["sem"] = cells["std"] / np.sqrt(cells["count"])
    better_low = RANK_METRICS[metric] == "min"
    best_rows = []
    for noise, g in cells.groupby("noise_rate"):
        i = g["mean"].idxmin() if better_low else g["mean"].idxmax()
        b = g.loc[i]
        tol = 0.0 if np.isnan(b["sem"]) else float(b["sem"])
        close = g[(g["mean"] - b["mean"]).abs() <= tol]["rank"].tolist()
        best_rows.append(
            {
                "noise_rate": noise,
                "best_rank": int(b["rank"]),
                "metric": metric,
                "best_mean": float(b["mean"]),
                "best_sem": float(b["sem"]),
                "runs": int(b["count"]),
                "within_1_sem": ",".join(str(int(r)) for r in close),
            }
        )
    return cells, pd.DataFrame(best_rows)
