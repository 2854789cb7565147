"""Label-noise detection experiments: every detector side by side, several seeds, clean-and-retrain, detection
over training time, detection at n = 2,000, and real human label errors (ChaosNLI).

Usage (from the project root):

    .venv/bin/python benchmarks/run_detection_experiment.py run [--workers 2] [--jobs sym20-s0,ract-regime-s0]
    .venv/bin/python benchmarks/run_detection_experiment.py aggregate
    .venv/bin/python benchmarks/run_detection_experiment.py list        # every job, its settings and size
    .venv/bin/python benchmarks/run_detection_experiment.py per-bucket  # human-label jobs: detection per entropy bucket

``run`` executes jobs in priority order, at most ``--workers`` at a time, each in its own process (one torch
thread each). A job writes ``results/noise_detection/raw/<job>.json``; a job whose JSON exists is skipped, so
the script can be re-run to extend the grid. ``aggregate`` writes ``table.md``, ``detection.csv`` (with each
detector's cost: runs, examples x epochs, seconds), ``detection_per_class.csv``, ``retrain.csv``,
``per_epoch.csv`` (each detector's AUROC / AUPRC / F1 at k and each run's share of fitted noisy labels per
checkpoint) and ``timings.csv`` (per run: prepare, optimizer steps, eval-mode checkpoints, validation/test,
scoring) next to the raw files.

Settings (``SETTINGS``; the first three are the original 400-example grid, unchanged):

- ``sym20`` / ``sym40`` / ``asym30``: ``agnews-detect`` (MiniLM, LoRA r=16, 400 examples, 32 tokens,
  2 epochs) at 20% / 40% symmetric and 30% asymmetric noise; RACT ranks 1 vs 16 (the reference, reused),
  curriculum grown to 16 seeded by ``ract-low``, AUM 2 passes, confident learning 2-fold.
- ``ract-regime``: RACT in its own regime (issue 15 item 2): 300 examples, **30 epochs**, one checkpoint
  per epoch, rank 1 vs a separate rank-64 adapter (the reference stays r=16), 200 validation examples.
- ``ract-regime-scaled-lr``: the same, with the rank-64 run's learning rate scaled by 16/64 (the reference rank
  over the high rank): in ``ract-regime`` seed 0 the rank-64 adapter at the rank-16 learning rate diverged
  (validation accuracy 0.34), so its "rank discrepancy" compared against a broken model. AUM is left out (its
  runs do not depend on the rank runs: ``ract-regime``'s AUM passes are the same training runs).
- ``ract-capacity``: RACT where the low rank is capacity-limited: 2,000 examples (20% flipped), 20 epochs, LoRA
  on one matrix (the last layer's attention value), rank 1 vs 16 (the reference, reused); no AUM (CPU time).
- ``n2000-sym20`` / ``n2000-sym40`` / ``n2000-asym30``: 2,000 examples (item 3), every detector, confident
  learning on **3-fold** out-of-sample probabilities, dual-LoRA.
- ``n2000-timing``: 2,000 examples, the single-run detectors only (small-loss, aulc, cartography,
  forgetting: one reference run), for item 6's "within 30 minutes".
- ``chaosnli-snli`` / ``chaosnli-mnli``: ChaosNLI items trained on their original labels, truth = original
  label != 100-vote majority (item 4; ``kss_lora.detect.human``). On the items alone the model learns only
  the label prior (no result committed).
- ``chaosnli-snli-pooled`` / ``chaosnli-mnli-pooled``: the same items pooled with bulk SNLI rows (the entropy
  study's files, ``kss entropy-data``), every row trained on and scored, only the items judged (``scored``);
  the single-run detectors and 3-fold confident learning (``POOLED``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "noise_detection"
RAW = OUT / "raw"
RUNS = ROOT / "runs" / "noise_detection"

# AG News label order (sorted names): 0 Business, 1 Sci/Tech, 2 Sports, 3 World.
ASYM_PAIRS = "{0: 1, 1: 0, 3: 0, 2: 3}"  # Business<->Sci/Tech, World->Business, Sports->World
SYM20 = ["noise.kind=symmetric", "noise.rate=0.2"]
SYM40 = ["noise.kind=symmetric", "noise.rate=0.4"]
ASYM30 = ["noise.kind=asymmetric", "noise.rate=0.3", f"noise.pairs={ASYM_PAIRS}"]
# The ten detectors of the original grid (before ract-neg and dual-lora existed): its jobs rerun as they ran.
ORIGINAL_DETECTORS = (
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
DETECT = {
    "low_rank": 1,
    "high_rank": 16,
    "curriculum_ranks": (16,),
    "curriculum_seed": "ract-low",
    "folds": 2,
    "aum_passes": 2,
    "checkpoints_per_epoch": 2,
    "eval_examples": 64,
}
SINGLE_RUN = ("small-loss", "aulc", "cartography", "forgetting")
RACT_REGIME = ("ract", "ract-neg", "ract-final", "ract-low", *SINGLE_RUN, "aum")
N2000 = ["data.max_train_examples=2000"]
# RACT where the low rank is capacity-limited (item 2): 2,000 examples (~400 flipped), 20 epochs, LoRA on ONE
# matrix (the last layer's attention value): rank 1 there has 768 weights for 2,000 examples, rank 16 (the
# reference, reused as RACT's high rank) 12,288. With LoRA on every query/value matrix even rank 1 has 9,204,
# and at 300 examples it memorised every flip (ract-regime-scaled-lr). One matrix also halves a step's cost
# (the backward pass stops in the last layer), which is what makes 2,000 x 20 example-epochs fit this CPU.
CAPACITY = ["data.max_eval_examples=200", "train.epochs=20", "method.target_modules=[layer.5.attention.self.value]"]
RETRAIN_WITH = ("ract-curriculum", "confident-learning")
# ChaosNLI items pooled with bulk SNLI rows (item 4): ~3,000 rows of 64 tokens, 3 epochs; sized for this 2-core
# CPU (an epoch of the pooled SNLI file took 5 min of wall with 4 processes on the 2 cores): the single-run
# detectors and 3-fold confident learning; no RACT ranks, AUM passes, curriculum or dual-LoRA.
POOLED = {
    "detectors": (*SINGLE_RUN, "confident-learning"),
    "folds": 3,
    "checkpoints_per_epoch": 1,
}


@dataclass(frozen=True)
class Setting:
    config: str
    overrides: tuple[str, ...]
    detect: dict[str, Any] = field(default_factory=dict)  # changes to DETECT
    human: bool = False  # ChaosNLI: train on the original labels, truth = != 100-vote majority


SETTINGS = {
    "sym20": Setting("agnews-detect", tuple(SYM20), {"detectors": ORIGINAL_DETECTORS}),
    "sym40": Setting("agnews-detect", tuple(SYM40), {"detectors": ORIGINAL_DETECTORS}),
    "asym30": Setting("agnews-detect", tuple(ASYM30), {"detectors": ORIGINAL_DETECTORS}),
    "ract-regime": Setting(
        "agnews-detect",
        (*SYM20, "data.max_train_examples=300", "data.max_eval_examples=200", "train.epochs=30"),
        {"detectors": RACT_REGIME, "high_rank": 64, "checkpoints_per_epoch": 1},
    ),
    "ract-regime-scaled-lr": Setting(
        "agnews-detect",
        (*SYM20, "data.max_train_examples=300", "data.max_eval_examples=200", "train.epochs=30"),
        {
            "detectors": tuple(d for d in RACT_REGIME if d != "aum"),
            "high_rank": 64,
            "high_rank_lr": 5e-3 * 16 / 64,  # agnews-detect's lr x reference rank / high rank
            "checkpoints_per_epoch": 1,
        },
    ),
    "ract-capacity": Setting(
        "agnews-detect",
        (*SYM20, *N2000, *CAPACITY),
        # no AUM: its two passes would double the job (an epoch here took ~2 min of one shared core)
        {"detectors": tuple(d for d in RACT_REGIME if d != "aum"), "high_rank": 16, "checkpoints_per_epoch": 1},
    ),
    "n2000-sym20": Setting("agnews-detect", (*SYM20, *N2000), {"folds": 3}),
    "n2000-sym40": Setting("agnews-detect", (*SYM40, *N2000), {"folds": 3}),
    "n2000-asym30": Setting("agnews-detect", (*ASYM30, *N2000), {"folds": 3}),
    "n2000-timing": Setting("agnews-detect", (*SYM20, *N2000), {"detectors": SINGLE_RUN}),
    "chaosnli-snli": Setting("chaosnli-snli-detect", (), {"folds": 3, "checkpoints_per_epoch": 1}, human=True),
    "chaosnli-mnli": Setting("chaosnli-mnli-detect", (), {"folds": 3, "checkpoints_per_epoch": 1}, human=True),
    "chaosnli-snli-pooled": Setting("chaosnli-snli-pooled-detect", (), POOLED, human=True),
    "chaosnli-mnli-pooled": Setting("chaosnli-mnli-pooled-detect", (), POOLED, human=True),
}
# Priority order: what must exist first comes first. (setting, seed, clean-and-retrain)
JOBS = [
    ("sym20", 0, True),
    ("sym20", 1, True),
    ("sym20", 2, True),
    ("sym40", 0, False),
    ("asym30", 0, False),
    ("sym40", 1, False),
    ("asym30", 1, False),
    ("sym40", 2, False),
    ("asym30", 2, False),
    ("ract-regime", 0, False),
    ("n2000-timing", 0, False),
    ("n2000-sym20", 0, False),
    ("n2000-sym40", 0, False),
    ("n2000-asym30", 0, False),
    ("chaosnli-snli", 0, False),
    ("chaosnli-mnli", 0, False),
    ("ract-regime-scaled-lr", 0, False),
    ("n2000-sym20", 1, False),
    ("n2000-sym40", 1, False),
    ("n2000-asym30", 1, False),
    ("ract-regime", 1, False),
    ("ract-regime-scaled-lr", 1, False),
    ("chaosnli-snli", 1, False),
    ("chaosnli-mnli", 1, False),
    ("ract-regime", 2, False),
    ("chaosnli-snli-pooled", 0, False),
    ("ract-regime-scaled-lr", 2, False),
    ("chaosnli-mnli-pooled", 0, False),
    ("chaosnli-snli-pooled", 1, False),
    ("ract-capacity", 0, False),
    ("ract-capacity", 1, False),
]


def job_name(setting: str, seed: int) -> str:
    return f"{setting}-s{seed}"


def job_options(setting: str) -> dict[str, Any]:
    return {**DETECT, **SETTINGS[setting].detect}


def run_job(setting: str, seed: int, retrain: bool) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from kss_lora.config import load_config
    from kss_lora.detect import chaosnli_human_labels, detect_label_issues
    from kss_lora.detect.retrain import bounds, clean_and_retrain, retrain_table
    from kss_lora.rundir import atomic_write_text

    name = job_name(setting, seed)
    spec = SETTINGS[setting]
    noise_seed = [] if spec.human else [f"noise.seed={seed}"]
    overrides = [*spec.overrides, f"train.seed={seed}", *noise_seed]
    cfg = load_config(spec.config, overrides)
    opts = job_options(setting)
    runs = RUNS / name
    t0 = time.time()
    human: dict[str, Any] = {}
    if spec.human:
        labels = chaosnli_human_labels(cfg)
        human, info = labels.detect_kwargs(), labels.info
    res = detect_label_issues(cfg, runs, **human, **opts)
    t_detect = time.time() - t0
    out = {
        "job": name,
        "setting": setting,
        "seed": seed,
        "config": spec.config,
        "overrides": overrides,
        "detect_options": opts,
        "n_train": int(res.ids.size),
        "noise_rate_true": res.noise_rate_true,
        "rate_estimate": res.rate_estimate,
        "rate_source": res.rate_source,
        "evaluation": res.evaluation().to_dict(orient="records"),
        "per_class": res.evaluation_per_class().to_dict(orient="records"),
        "curves": res.curves,
        "timings": res.timings,
        "runs": {
            k: {
                "test_accuracy": v.get("test_accuracy"),
                "val_accuracy": v.get("val_accuracy"),
                "n_train": v.get("n_train"),
                "wall_time_s": v.get("wall_time_s"),
            }
            for k, v in res.run_results.items()
        },
        "extras": {k: v for k, v in res.extras.items() if not hasattr(v, "shape")},
        "aum_threshold_score": res.extras.get("aum_threshold_score"),
        "run_health": res.run_health,
        "detect_wall_s": t_detect,
    }
    if spec.human:
        out["human_labels"] = info
        out["per_bucket"] = res.evaluation_per_group(labels.bucket, column="bucket").to_dict(orient="records")
        out["per_bucket_source"] = "pipeline"
    RAW.mkdir(parents=True, exist_ok=True)
    out["wall_s"] = time.time() - t0
    atomic_write_text(RAW / f"{name}.json", json.dumps(out, indent=1, default=float))  # detection survives a cut
    if retrain:
        t1 = time.time()
        rows = bounds(cfg, runs, floor_result=res.run_results["reference"])
        cur = res.run_results.get("curriculum-1")
        if cur is not None:
            rows.append(
                {
                    "condition": "ract-curriculum model (continued on kept set)",
                    "n_train": cur["n_train"],
                    "test_accuracy": cur["test_accuracy"],
                    "test_loss": cur["test_loss"],
                    "val_accuracy": cur["val_accuracy"],
                    "val_loss": cur["val_loss"],
                    "noise_rate_trained": cur.get("noise_rate_realised"),
                }
            )
        for d in RETRAIN_WITH:
            rows.append(clean_and_retrain(cfg, res.flags[d], runs, action="drop", name=f"drop-{d}"))
        out["retrain"] = retrain_table(rows).to_dict(orient="records")
        out["retrain_wall_s"] = time.time() - t1
    out["wall_s"] = time.time() - t0
    # atomic: a job killed mid-write must not leave a partial raw file that ``run`` then skips as done
    atomic_write_text(RAW / f"{name}.json", json.dumps(out, indent=1, default=float))
    return f"{name}: {out['wall_s']:.0f} s"


def run(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    wanted = set(args.jobs.split(",")) if args.jobs else None
    todo = [
        j
        for j in JOBS
        if (wanted is None or job_name(j[0], j[1]) in wanted) and not (RAW / f"{job_name(j[0], j[1])}.json").exists()
    ]
    print(f"{len(todo)} jobs: {[job_name(s, d) for s, d, _ in todo]}", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, *j): job_name(j[0], j[1]) for j in todo}
        for fut in as_completed(futures):
            try:
                print(fut.result(), flush=True)
            except Exception as exc:  # keep the other jobs going; the failure is printed
                print(f"{futures[fut]}: FAILED {type(exc).__name__}: {exc}", flush=True)
    return 0


def _mean_std(values: list[float], fmt: str = ".3f") -> str:
    import numpy as np

    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    sd = fmt.replace("+", "")
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{sd}}" if v.size > 1 else f"{v.mean():{fmt}}"


def _near_prior(raw: dict[str, Any], detector: str) -> int:
    """How many runs ``detector`` read that sit near the label prior (:func:`kss_lora.detect.runs_near_prior`).

    Jobs from before the pipeline recorded each run's validation majority-class rate (``run_health``) use 1/K,
    K = the classes of the per-class table (AG News's validation split is stratified, so balanced)."""
    from kss_lora.detect.options import DetectOptions, runs_near_prior

    health = raw.get("run_health")
    if health is None:
        k = len({row["class"] for row in raw["per_class"]})
        health = {
            name: {"val_accuracy": r["val_accuracy"], "val_majority_rate": 1.0 / k}
            for name, r in raw.get("runs", {}).items()
            if r.get("val_accuracy") is not None
        }
    opts = DetectOptions(**{key: v for key, v in raw.get("detect_options", {}).items() if key != "detectors"})
    return len(runs_near_prior(health, opts.runs_of(detector, list(health))))


def aggregate(args: argparse.Namespace) -> int:
    import pandas as pd

    from kss_lora.detect.options import NEAR_PRIOR_MARGIN

    raws = [json.loads(p.read_text()) for p in sorted(RAW.glob("*.json"))]
    if not raws:
        print("no raw results yet", file=sys.stderr)
        return 2
    det = pd.DataFrame(
        [
            {
                "setting": r["setting"],
                "seed": r["seed"],
                "rate_estimate": r["rate_estimate"],
                "noise_rate_true": r["noise_rate_true"],
                **e,
                "runs_near_prior": _near_prior(r, e["detector"]),
            }
            for r in raws
            for e in r["evaluation"]
        ]
    )
    det.to_csv(OUT / "detection.csv", index=False)
    pc = pd.DataFrame([{"setting": r["setting"], "seed": r["seed"], **e} for r in raws for e in r["per_class"]])
    pc.to_csv(OUT / "detection_per_class.csv", index=False)
    lines = [
        "# Label-noise detection on AG News (MiniLM) — measured",
        "",
        "Generated by `benchmarks/run_detection_experiment.py aggregate`; see README.md for the setup.",
        "Mean ± sample std over seeds (n = seeds). F1@k uses the oracle count k = true noise count; "
        "F1@flags uses each detector's own flags (estimated rate, AUM threshold samples, cleanlab pruning).",
        f"`runs_near_prior`: runs the detector reads whose validation accuracy is below the majority-class rate + "
        f"{NEAR_PRIOR_MARGIN:.2f} (collapsed or diverged), summed over seeds; a detector with any is scored on a "
        "broken model. Jobs run before the rate was recorded use 1/K (AG News validation is class-balanced).",
        "",
    ]
    metrics = ["f1_at_k", "f1_flags", "precision_flags", "recall_flags", "auroc", "auprc"]
    costs = [c for c in ("cost_runs", "cost_example_epochs", "cost_total_s", "runs_near_prior") if c in det]
    for setting, g in det.groupby("setting", sort=False):
        seeds = sorted(g["seed"].unique())
        rates = g.drop_duplicates("seed")
        lines += [
            f"## {setting} (seeds {', '.join(map(str, seeds))}; true rate "
            f"{_mean_std(rates['noise_rate_true'].tolist())}, estimated {_mean_std(rates['rate_estimate'].tolist())})",
            "",
            "| detector | " + " | ".join(metrics + costs) + " |",
            "|---" * (len(metrics) + len(costs) + 1) + "|",
        ]
        order = g.groupby("detector", sort=False)["f1_at_k"].mean().sort_values(ascending=False).index
        for d in order:
            rows = g[g["detector"] == d]
            cells = [_mean_std(rows[m].tolist()) for m in metrics]
            cells += [_mean_std(rows[c].tolist(), ".0f") for c in costs if c != "runs_near_prior"]
            if "runs_near_prior" in costs:  # a count: summed over seeds, so one broken seed shows
                cells.append(str(int(rows["runs_near_prior"].fillna(0).sum())))
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _per_epoch(raws) + _timings(raws) + _per_bucket_lines(raws)
    lines += [
        "## Per class (F1 at the class's own k, mean over seeds; class = given label: "
        "0 Business, 1 Sci/Tech, 2 Sports, 3 World)",
        "",
    ]
    for setting, g in pc.groupby("setting", sort=False):
        g = g.assign(f1_at_k=g["f1_at_k"].where(g["n_noisy"] > 0))  # no noisy example in the class: undefined
        wide = g.groupby(["detector", "class"], sort=False)["f1_at_k"].mean().unstack("class")
        lines += [
            f"### {setting}",
            "",
            "| detector | " + " | ".join(f"class {c}" for c in wide.columns) + " |",
            "|---" * (len(wide.columns) + 1) + "|",
        ]
        lines += [
            f"| {d} | " + " | ".join("–" if v != v else f"{v:.3f}" for v in row) + " |" for d, row in wide.iterrows()
        ]
        lines.append("")
    rt = [{"setting": r["setting"], "seed": r["seed"], **row} for r in raws for row in r.get("retrain", [])]
    if rt:
        rdf = pd.DataFrame(rt)
        rdf.to_csv(OUT / "retrain.csv", index=False)
        lines += [
            "## Clean and retrain (test accuracy, 500 AG News test examples)",
            "",
            "| setting | condition | n_train | test_accuracy | vs ceiling (points) | noise left | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for (setting, cond), g in rdf.groupby(["setting", "condition"], sort=False):
            lines.append(
                f"| {setting} | {cond} | {_mean_std(g['n_train'].tolist(), '.0f')} | "
                f"{_mean_std(g['test_accuracy'].tolist())} | "
                f"{_mean_std(g['vs_ceiling_points'].tolist(), '+.1f')} | "
                f"{_mean_std(g['noise_rate_trained'].tolist())} | {len(g)} |"
            )
        lines.append("")
    walls = [f"{r['job']}: {r['wall_s']:.0f} s" for r in raws]
    lines += [
        "Wall time per job (1 torch thread each, shared 2-core machine): " + "; ".join(walls),
        "",
    ]
    (OUT / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _per_epoch(raws: list[dict[str, Any]]) -> list[str]:
    """per_epoch.csv (every checkpoint) and, per setting, a table at epoch ends: AUROC of each trajectory
    detector and the share of flipped labels each run predicts as given (mean over seeds)."""
    import pandas as pd

    rows = [{"setting": r["setting"], "seed": r["seed"], **c} for r in raws for c in r.get("curves", [])]
    if not rows:
        return []
    df = pd.DataFrame(rows)
    df.to_csv(OUT / "per_epoch.csv", index=False)
    lines = [
        "## Over training (epoch ends; `per_epoch.csv` has every checkpoint)",
        "",
        "AUROC of each detector recomputed from the checkpoints up to that epoch, and `fitted` = share of the "
        "flipped labels a run predicts as given (it has memorised them); mean over seeds.",
        "",
    ]
    for setting, g in df[df["epoch_end"] | (df["step"] == 0)].groupby("setting", sort=False):
        au = g[g["what"] == "auroc"].pivot_table(index="epoch", columns="of", values="value")
        fit = g[g["what"] == "fitted_noisy"].pivot_table(index="epoch", columns="of", values="value")
        wide = pd.concat([au.add_prefix("auroc "), fit.add_prefix("fitted ")], axis=1)
        step = max(1, len(wide) // 12)  # at most about a dozen rows per setting
        keep = wide.iloc[list(range(0, len(wide), step)) + ([len(wide) - 1] if (len(wide) - 1) % step else [])]
        lines += [
            f"### {setting} (seeds {', '.join(map(str, sorted(g['seed'].unique())))})",
            "",
            "| epoch | " + " | ".join(keep.columns) + " |",
            "|---" * (len(keep.columns) + 1) + "|",
        ]
        lines += [f"| {e:g} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for e, row in keep.iterrows()]
        lines.append("")
    return lines


def _per_bucket_lines(raws: list[dict[str, Any]]) -> list[str]:
    from detection_per_bucket import table

    return table(raws, OUT)


def _timings(raws: list[dict[str, Any]]) -> list[str]:
    """timings.csv (per run, seconds by phase) and a table of where each setting's time goes."""
    import pandas as pd

    rows = [
        {"setting": r["setting"], "seed": r["seed"], "run": k, **t}
        for r in raws
        for k, t in r.get("timings", {}).items()
    ]
    if not rows:
        return []
    df = pd.DataFrame(rows).drop_duplicates(["setting", "seed", "wall_s"])  # a reused run is listed once
    df.to_csv(OUT / "timings.csv", index=False)
    phases = [c for c in ("prepare_s", "train_steps_s", "checkpoint_s", "eval_s", "score_s", "other_s") if c in df]
    lines = [
        "## Where the time goes (seconds per job, summed over its runs; mean over seeds)",
        "",
        "`checkpoint_s` = eval-mode passes over the training set (the trajectories every detector reads); "
        "`eval_s` = validation and test passes; `score_s` = scoring held-out rows after training.",
        "",
        "| setting | runs | " + " | ".join(phases) + " | wall_s | job wall_s |",
        "|---" * (len(phases) + 4) + "|",
    ]
    walls = {(r["setting"], r["seed"]): r.get("detect_wall_s", r["wall_s"]) for r in raws}
    for setting, g in df.groupby("setting", sort=False):
        per_seed = g.fillna(0.0).groupby("seed")[[*phases, "wall_s"]].sum()
        n_runs = g.groupby("seed")["run"].count().mean()
        job = [walls[(setting, s)] for s in per_seed.index]
        lines.append(
            f"| {setting} | {n_runs:.0f} | "
            + " | ".join(f"{per_seed[c].mean():.0f}" for c in [*phases, "wall_s"])
            + f" | {sum(job) / len(job):.0f} |"
        )
    lines.append("")
    return lines


def per_bucket(args: argparse.Namespace) -> int:
    from detection_per_bucket import backfill

    human = {name for name, spec in SETTINGS.items() if spec.human}
    return backfill(RAW, RUNS, human)


def list_jobs(args: argparse.Namespace) -> int:
    for setting, seed, retrain in JOBS:
        name = job_name(setting, seed)
        spec = SETTINGS[setting]
        done = "done" if (RAW / f"{name}.json").exists() else "todo"
        print(
            f"{name:22s} {done}  {spec.config} {' '.join(spec.overrides)}  {spec.detect}{'  +retrain' if retrain else ''}"
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--jobs", help="comma-separated job names (default: all, in priority order)")
    sub.add_parser("aggregate")
    sub.add_parser("list")
    sub.add_parser("per-bucket", help="add per-entropy-bucket detection to human-label jobs run before it existed")
    args = p.parse_args()
    return {"run": run, "aggregate": aggregate, "list": list_jobs, "per-bucket": per_bucket}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
