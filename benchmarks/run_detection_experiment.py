"""AG News label-noise detection: every detector side by side, several seeds, and clean-and-retrain.

Usage (from the project root):

    .venv/bin/python benchmarks/run_detection_experiment.py run [--workers 2] [--jobs sym20-s0,sym40-s0]
    .venv/bin/python benchmarks/run_detection_experiment.py aggregate

``run`` executes jobs in priority order (20% symmetric x 3 seeds with clean-and-retrain first, then 40%
symmetric and the asymmetric pattern), at most ``--workers`` at a time, each job in its own process
(one torch thread each). A job writes ``results/noise_detection/raw/<job>.json``; a job whose JSON exists
is skipped, so the script can be re-run to extend the grid. ``aggregate`` writes ``table.md`` /
``detection.csv`` / ``retrain.csv`` (mean ± std over seeds) next to the raw files.

Per job: base config ``agnews-detect`` (MiniLM, LoRA r=16, 400 training examples, 32 tokens, 2 epochs),
``train.seed = noise.seed = seed``; RACT with ranks 1 (low) and 16 (high = the reference run, reused),
curriculum continuing the rank-1 adapter grown to r=16 on the kept set, seeded by the low-rank AULC
(``ract-low``; see docs/detection.md for why not SPEC's discrepancy); AUM with 2 threshold-sample
passes; confident learning with 2-fold cross-fitting (3+ folds did not fit the CPU budget). The noise rate is estimated (confident joint on
cross-fitted probabilities): no oracle count is used for flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "noise_detection"
RAW = OUT / "raw"
RUNS = ROOT / "runs" / "noise_detection"

# AG News label order (sorted names): 0 Business, 1 Sci/Tech, 2 Sports, 3 World.
ASYM_PAIRS = "{0: 1, 1: 0, 3: 0, 2: 3}"  # Business<->Sci/Tech, World->Business, Sports->World
SETTINGS = {
    "sym20": ["noise.kind=symmetric", "noise.rate=0.2"],
    "sym40": ["noise.kind=symmetric", "noise.rate=0.4"],
    "asym30": ["noise.kind=asymmetric", "noise.rate=0.3", f"noise.pairs={ASYM_PAIRS}"],
}
# Priority order: what must exist first comes first.
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
]
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
RETRAIN_WITH = ("ract-curriculum", "confident-learning")


def job_name(setting: str, seed: int) -> str:
    return f"{setting}-s{seed}"


def run_job(setting: str, seed: int, retrain: bool) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from kss_lora.config import load_config
    from kss_lora.detect import detect_label_issues
    from kss_lora.detect.retrain import bounds, clean_and_retrain, retrain_table

    name = job_name(setting, seed)
    overrides = [*SETTINGS[setting], f"train.seed={seed}", f"noise.seed={seed}"]
    cfg = load_config("agnews-detect", overrides)
    runs = RUNS / name
    t0 = time.time()
    res = detect_label_issues(cfg, runs, **DETECT)
    t_detect = time.time() - t0
    out = {
        "job": name,
        "setting": setting,
        "seed": seed,
        "overrides": overrides,
        "detect_options": DETECT,
        "n_train": int(res.ids.size),
        "noise_rate_true": float(res.is_noisy.mean()),
        "rate_estimate": res.rate_estimate,
        "rate_source": res.rate_source,
        "evaluation": res.evaluation().to_dict(orient="records"),
        "per_class": res.evaluation_per_class().to_dict(orient="records"),
        "runs": {
            k: {
                "test_accuracy": v.get("test_accuracy"),
                "val_accuracy": v.get("val_accuracy"),
                "n_train": v.get("n_train"),
                "wall_time_s": v.get("wall_time_s"),
            }
            for k, v in res.run_results.items()
        },
        "aum_threshold_score": res.extras.get("aum_threshold_score"),
        "detect_wall_s": t_detect,
    }
    RAW.mkdir(parents=True, exist_ok=True)
    out["wall_s"] = time.time() - t0
    (RAW / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))  # detection survives a cut
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
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))
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


def aggregate(args: argparse.Namespace) -> int:
    import pandas as pd

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
        "",
    ]
    metrics = ["f1_at_k", "f1_flags", "precision_flags", "recall_flags", "auroc", "auprc"]
    for setting, g in det.groupby("setting", sort=False):
        seeds = sorted(g["seed"].unique())
        rates = g.drop_duplicates("seed")
        lines += [
            f"## {setting} (seeds {', '.join(map(str, seeds))}; true rate "
            f"{_mean_std(rates['noise_rate_true'].tolist())}, estimated {_mean_std(rates['rate_estimate'].tolist())})",
            "",
            "| detector | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        order = g.groupby("detector", sort=False)["f1_at_k"].mean().sort_values(ascending=False).index
        for d in order:
            rows = g[g["detector"] == d]
            lines.append(f"| {d} | " + " | ".join(_mean_std(rows[m].tolist()) for m in metrics) + " |")
        lines.append("")
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
        "Wall time per job (2 jobs in parallel, 1 torch thread each, shared 2-core machine): " + "; ".join(walls),
        "",
    ]
    (OUT / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--jobs", help="comma-separated job names (default: all, in priority order)")
    sub.add_parser("aggregate")
    args = p.parse_args()
    return run(args) if args.cmd == "run" else aggregate(args)


if __name__ == "__main__":
    sys.exit(main())
