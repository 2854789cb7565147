"""``kss dynamics`` (one run's per-example tables and plots) and ``kss entropy`` (Steele's analysis).

Imported by ``kss_lora.cli`` at start-up; each ``@command`` registers a subcommand. The work is done by
:mod:`kss_lora.dynamics.analysis` and :mod:`kss_lora.dynamics.plots`; this module only parses arguments,
writes files and prints where they went.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..commands import command
from ..errors import ConfigError
from ..output_paths import check_output_dir, check_own_outputs
from ..tables import fmt_num
from .metrics import LN2

FORMATS = ("csv", "parquet")


def _write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number (a loss in nats), got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite loss in nats, got {text!r}")
    return value


def _add_dynamics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory recorded with tracking.per_example: true")
    p.add_argument(
        "--source",
        choices=("checkpoint", "free"),
        default="checkpoint",
        help="checkpoint: eval-mode passes (default); free: the training pass's own logits",
    )
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=LN2,
        help="learning time = first checkpoint with loss below this (nats; default ln 2, p(y) > 0.5)",
    )
    p.add_argument("-o", "--out", help="output folder (default: RUN_DIR/dynamics)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="table format (default csv)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own code when reading its architecture (never taken from the run's config)",
    )


@command("dynamics", "per-example dynamics of a run: tables (AULC, cartography, AUM, ...) and data-map plots")(
    _add_dynamics_args
)
def _dynamics(args: argparse.Namespace) -> int:
    from . import plots
    from .analysis import load_run, run_capacity, run_separation, run_tables

    chosen = check_output_dir(args.out, "--out") if args.out else None
    run = load_run(args.run_dir)
    out = chosen or run.run_dir / "dynamics"
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = run_tables(run, source=args.source, threshold=args.threshold)
    files = [_write_table(train, out / f"examples.{args.format}")]
    if heldout is not None:
        files.append(_write_table(heldout, out / f"heldout.{args.format}"))
    title = f"{run.run_dir.name}: {run.condition} ({args.source})"
    files.append(plots.data_map(train, out / "data_map.png", title=title))
    capacity = run_capacity(run, trust_remote_code=args.trust_remote_code)
    summary: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "source": args.source,
        "threshold": args.threshold,
        "n_train": len(train),
        "n_heldout": 0 if heldout is None else len(heldout),
        "capacity": capacity,
        "mean_aulc": float(train["aulc"].mean()),
        "learned": float((train["learning_time"] >= 0).mean()),
    }
    sep = run_separation(run, args.source)
    if sep is not None:
        s, epochs = sep
        files.append(
            plots.temporal_separation_plot(
                s, epochs, out / "temporal_separation.png", capacity_line=capacity["line"], title=title
            )
        )
        summary["temporal_separation"] = {
            "epochs": epochs.tolist(),
            "clean_fitted": s.clean_fitted.tolist(),
            "noisy_fitted": s.noisy_fitted.tolist(),
            "best_epoch": float(epochs[s.best_checkpoint]),
            "overtaking_epoch": float(epochs[s.crossover]) if s.crossover >= 0 else None,
        }
    if "is_noisy" in train and train["is_noisy"].any():
        summary["aum_noisy_mean"] = float(train.loc[train["is_noisy"], "aum"].mean())
        summary["aum_clean_mean"] = float(train.loc[~train["is_noisy"], "aum"].mean())
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    files.append(summary_path)
    for f in files:
        print(f)
    print(capacity["line"])
    if sep is not None:
        ts = summary["temporal_separation"]
        over = ts["overtaking_epoch"]
        print(
            f"temporal separation: max clean-noisy gap at epoch {ts['best_epoch']:.2f}; noisy fitting overtakes "
            + (f"at epoch {over:.2f}" if over is not None else "never")
        )
    return 0


def _add_entropy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", help="run directories trained on ChaosNLI, or folders of them")
    p.add_argument("-o", "--out", default="entropy_report", help="output folder (default: ./entropy_report)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--gate-split",
        choices=("validation", "test"),
        default="validation",
        help="the split whose accuracy must beat its majority-class rate for a run to count (default validation)",
    )
    p.add_argument(
        "--gate-margin",
        type=float,
        default=0.10,
        help="how far above the majority-class rate (accuracy, 0.10 = 10 points; default 0.10)",
    )


# What `kss entropy -o` writes besides its plots: rewritten on every call, so never over a user's files.
ENTROPY_OUTPUTS = (
    "claims.csv",
    "runs.csv",
    "correlations_per_run.csv",
    "correlations_per_condition.csv",
    "unlearning_by_bucket.csv",
    "lora_vs_full_contested.csv",
    "by_majority_label.csv",
    "entropy.md",
)


@command("entropy", "annotation entropy vs per-example AULC / un-learning over ChaosNLI runs (Steele)")(
    _add_entropy_args
)
def _entropy(args: argparse.Namespace) -> int:
    from . import plots
    from .analysis import entropy_analysis, entropy_markdown, find_runs, load_run
    from .entropy_report import claims_table
    from .entropy_verdicts import verdict_runs

    if args.n_boot < 0:
        raise ConfigError("--n-boot", f"must be >= 0, got {args.n_boot}")
    if not (math.isfinite(args.gate_margin) and 0 <= args.gate_margin < 1):
        raise ConfigError("--gate-margin", f"must be in [0, 1) (accuracy points as a fraction), got {args.gate_margin}")
    out = check_output_dir(args.out, "--out")
    check_own_outputs(out, ENTROPY_OUTPUTS, marker="correlations_per_run.csv", field="--out")
    runs = [load_run(p) for p in find_runs(args.run_dirs)]
    report = entropy_analysis(
        runs, n_boot=args.n_boot, seed=args.seed, gate_split=args.gate_split, gate_margin=args.gate_margin
    )
    out.mkdir(parents=True, exist_ok=True)
    files = [  # the marker of check_own_outputs first: a folder cut short after it is still ours
        _write_table(report.per_run, out / "correlations_per_run.csv"),
        _write_table(claims_table(report.verdicts), out / "claims.csv"),
        _write_table(verdict_runs(report.per_run, report.items), out / "runs.csv"),
        _write_table(report.per_condition, out / "correlations_per_condition.csv"),
        _write_table(report.delta, out / "unlearning_by_bucket.csv"),
        _write_table(report.lora_vs_full, out / "lora_vs_full_contested.csv"),
        _write_table(report.by_label, out / "by_majority_label.csv"),
    ]
    md = out / "entropy.md"
    md.write_text("# Annotation entropy vs per-example learning dynamics\n\n" + entropy_markdown(report))
    files.append(md)
    for which in ("heldout", "train"):
        if (report.items["items"] == which).any():
            files.append(
                plots.entropy_scatter(report.items, report.per_run, out / f"entropy_vs_aulc_{which}.png", which=which)
            )
            files.append(plots.unlearning_bars(report.delta, out / f"unlearning_{which}.png", which=which))
            first = {}
            counted = report.per_run[(report.per_run["items"] == which) & report.per_run["counts"]]
            for r in counted.itertuples():
                first.setdefault(r.condition, report.trajectories[(r.run, which)])
            files.append(
                plots.bucket_trajectories(
                    first,
                    out / f"loss_by_bucket_{which}.png",
                    title=f"mean loss per entropy bucket ({which} items, first counted seed)",
                )
            )
    for f in files:
        print(f)
    for v in report.verdicts:
        print(f"verdict {v.id}: {v.verdict}")
    for r in report.per_condition.itertuples():
        print(
            f"{r.condition:40s} {r.items:8s} rho={r.rho:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
            f"partial={r.partial_rho:+.3f} (paper 0.06-0.43: {'in' if r.in_paper_range else 'out of'} range)"
        )
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _add_entropy_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chaosnli",
        default="../shared/data/chaosnli/chaosNLI_snli.jsonl",
        help="ChaosNLI SNLI or MNLI file (default: ../shared/data/chaosnli/chaosNLI_snli.jsonl)",
    )
    p.add_argument(
        "--bulk",
        nargs="+",
        default=["../shared/data/snli/snli_1.0_dev_sample.jsonl", "../shared/data/snli/snli_1.0_test_sample.jsonl"],
        help="SNLI-format jsonl files of bulk rows (default: the two SNLI samples in ../shared/data/snli)",
    )
    p.add_argument("-o", "--out", required=True, help="output folder, e.g. runs/entropy_data/snli")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the 80/20 item split (default 42, Steele's)")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="share of items held out (default 0.2)")
    p.add_argument(
        "--bulk-val", type=int, default=300, help="bulk rows held out (by premise) as the validation set (default 300)"
    )
    p.add_argument("--bulk-max", type=int, help="keep at most this many bulk training rows (seeded; Steele: 20000)")
    p.add_argument("--bulk-seed", type=int, default=42, help="seed of the bulk validation rows and subsample")


@command("entropy-data", "the entropy study's data (Steele): bulk NLI rows + 80% of ChaosNLI's items, 20% held out")(
    _add_entropy_data_args
)
def _entropy_data(args: argparse.Namespace) -> int:
    from .entropy_data import build_study_data

    if not 0 < args.heldout_fraction < 1:
        raise ConfigError("--heldout-fraction", f"must be in (0, 1), got {args.heldout_fraction}")
    if args.bulk_val < 0:
        raise ConfigError("--bulk-val", f"must be >= 0, got {args.bulk_val}")
    if args.bulk_max is not None and args.bulk_max < 1:
        raise ConfigError("--bulk-max", f"must be >= 1, got {args.bulk_max}")
    out = check_output_dir(args.out, "--out")
    m = build_study_data(
        args.chaosnli,
        args.bulk,
        out,
        split_seed=args.split_seed,
        val_fraction=args.heldout_fraction,
        bulk_val=args.bulk_val,
        bulk_max=args.bulk_max,
        bulk_seed=args.bulk_seed,
    )
    for name in m["files"]:
        print(out / name)
    print(out / "manifest.json")
    rows, rate = m["rows"], m["majority_rate"]
    print(
        f"train: {rows['bulk']} bulk rows + {rows['tracked']} tracked items; held out: {rows['heldout']} items "
        f"(majority-class rate {rate['heldout']:.3f}); validation: {rows['validation']} bulk rows"
        + (f" (majority-class rate {rate['validation']:.3f})" if rows["validation"] else "")
    )
    print("bulk rows dropped: " + ", ".join(f"{k} {v}" for k, v in m["bulk_dropped"].items()))
    return 0


def _add_optimal_rank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", help="a folder of finished runs (e.g. runs/optimal_rank_cpu)")
    p.add_argument("--metric", default="val_loss", help="val_loss (default), val_accuracy, gap_clean, test_accuracy")
    p.add_argument("-o", "--out", help="write the per-cell and best-rank tables as CSV into this folder")
    p.add_argument(
        "--sweep",
        help="only this sweep's runs (a runs directory several sweeps share); with -o also runs.csv, claims.csv "
        "(the claim 'the best rank falls as noise rises', judged by the verdict engine) and verdicts.md",
    )


@command("optimal-rank", "best LoRA rank per noise rate over a rank x noise sweep (lower rank at more noise?)")(
    _add_optimal_rank_args
)
def _optimal_rank(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from ..rundir import CorruptRecord, RunDirectory
    from .analysis import optimal_rank

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such runs directory")
    if args.out:
        out = check_output_dir(args.out, "--out")
        if args.sweep:  # the claim files: only in a folder this command wrote before (it has the cells table)
            check_own_outputs(
                out, ("runs.csv", "claims.csv", "verdicts.md"), marker="optimal_rank_cells.csv", field="--out"
            )
    runs = None
    if args.sweep:
        from ..lab.registry import load_runs

        runs = load_runs(root, args.sweep)
        runs = runs[runs["status"] == "ok"]
        results = runs.to_dict("records")
    else:
        results = []
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                record = RunDirectory(d).read_result()
            except CorruptRecord as exc:
                print(f"warning: skipped: {exc}", file=sys.stderr)
                continue
            if record is not None:
                results.append(record.to_dict())
    cells, best = optimal_rank(results, metric=args.metric)
    table = cells.pivot(index="rank", columns="noise_rate", values="mean")
    print(f"mean {args.metric} by LoRA rank (rows) and noise rate (columns)")
    print(table.to_string(float_format=lambda v: fmt_num(v, 4)))
    print()
    print(best.to_string(index=False, float_format=lambda v: fmt_num(v, 4)))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _write_table(cells, out / "optimal_rank_cells.csv")
        _write_table(best, out / "optimal_rank_best.csv")
        if runs is not None:
            _write_claims(runs, out, metric=args.metric)
    return 0


def _write_claims(runs: Any, out: Path, *, metric: str) -> None:
    """runs.csv, claims.csv and verdicts.md of the rank-vs-noise claim (a sweep's runs only)."""
    from ..lab.verdicts import CLAIM_COLUMNS, EXTRA_COLUMNS
    from ..tables import markdown_table, write_csv
    from .optimal_rank import rank_falls_claim

    runs.to_csv(out / "runs.csv", index=False)
    claim = rank_falls_claim(runs, metric=metric)
    write_csv(out / "claims.csv", claim.rows(), [*CLAIM_COLUMNS, *EXTRA_COLUMNS])
    text = [
        "# Optimal rank vs label noise: the claim, judged by the verdict engine",
        "",
        f"Generated by `kss optimal-rank --sweep` from runs.csv (metric {metric}; Welch t, one-sided, Holm over the "
        "lower ranks, 90% intervals). claims.csv holds every comparison.",
        "",
        markdown_table([claim.as_dict()]),
        "",
    ]
    (out / "verdicts.md").write_text("\n".join(text))
