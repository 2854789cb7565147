"""``kss eval truthfulqa``: MC1/MC2 of a base model or a trained adapter (a run directory)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..commands import command
from ..errors import ConfigError
from ..output_paths import check_output_dir, check_output_file, check_own_outputs
from .run_models import adapter_dir, load_for_scoring, run_config, run_model_name, trained_rows

__all__ = ["adapter_dir", "load_for_scoring", "run_model_name", "trained_rows"]  # re-exported: older imports

DEFAULT_CSV = "../shared/data/truthfulqa/TruthfulQA.csv"


def _add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", required=True)
    t = sub.add_parser(
        "truthfulqa",
        help="TruthfulQA MC1/MC2 by answer log-likelihood",
        description="TruthfulQA MC1/MC2/MC3 by answer log-likelihood (original benchmark definitions).",
    )
    t.add_argument("--model", help="built-in name, HF id or path; default: the adapter run's model.name")
    t.add_argument("--adapter", help="run directory (with adapter/) or a PEFT adapter folder to load and merge")
    t.add_argument("--csv", default=DEFAULT_CSV, help=f"TruthfulQA.csv (default {DEFAULT_CSV})")
    t.add_argument(
        "--prompt",
        choices=("qa", "chat"),
        default="qa",
        help="qa: the benchmark's six-shot QA primer (default); chat: the tokenizer's chat template",
    )
    t.add_argument("--limit", type=int, help="score a seeded random subset of this many questions")
    t.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (default 0)")
    t.add_argument(
        "--holdout",
        metavar="RUN_DIR",
        help="score only questions that run did not train on (its splits.json), e.g. after Q/A tuning",
    )
    t.add_argument("--batch-size", type=int, default=16, help="answers per forward pass (default 16)")
    t.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared CPU more threads are often slower)",
    )
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="model weights dtype")
    t.add_argument("--out", help="write the summary (JSON) here; per-question scores go next to it (.csv)")
    runs = t.add_argument_group(
        "every adapter of a sweep",
        "score the base model and each finished run of --arms on the questions no run trained on; writes "
        "scores.csv, per_question/, runs.csv, claims.csv and verdicts.md in --out-dir (resumable)",
    )
    runs.add_argument("--runs", metavar="RUNS_DIR", help="a sweep's runs directory (runs saved with their adapter)")
    runs.add_argument("--sweep", help="the sweep whose runs (and condition names) to score")
    runs.add_argument(
        "--arms",
        help="comma-separated conditions to score (default: standard, dense γ=1.0, dense γ=1.5, kss-default, "
        "kss-highgamma)",
    )
    runs.add_argument("--out-dir", help="folder for the tables (required with --runs)")


@command("eval", "evaluate a model or adapter on a benchmark (truthfulqa)")(_add_args)
def _eval(args: argparse.Namespace) -> int:
    if args.benchmark == "truthfulqa" and args.runs:
        score_sweep(args)
    elif args.benchmark == "truthfulqa":
        summary = run_truthfulqa(args)
        print(json.dumps(summary))
    return 0


def score_sweep(args: argparse.Namespace) -> None:
    """``--runs``: every adapter of a sweep and the base model on shared held-out questions, then the claim."""
    import torch

    from ..lab.registry import load_runs
    from .truthfulqa_runs import DEFAULT_ARMS, score_runs, write_sweep_claims

    for flag in ("model", "adapter", "holdout", "out"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag}", "not with --runs (every run's adapter is scored; use --out-dir)")
    if not args.out_dir:
        raise ConfigError("--out-dir", "required with --runs")
    if not args.sweep:
        raise ConfigError("--sweep", "required with --runs (it names the conditions)")
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(flag, f"must be at least 1, got {value}")
    out = check_output_dir(args.out_dir, "--out-dir")
    check_own_outputs(
        out, ("runs.csv", "claims.csv", "verdicts.md", "per_question"), marker="scores.csv", field="--out-dir"
    )
    arms = tuple(a.strip() for a in args.arms.split(",")) if args.arms else DEFAULT_ARMS
    runs = load_runs(args.runs, args.sweep)
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    score_runs(
        runs,
        out,
        csv=args.csv,
        arms=arms,
        prompt=args.prompt,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        dtype=getattr(torch, args.dtype),
    )
    for path in write_sweep_claims(out):
        print(f"wrote {path}")


def run_truthfulqa(args: argparse.Namespace) -> dict[str, Any]:
    import time

    import torch

    from .truthfulqa import evaluate_truthfulqa, load_truthfulqa, sample_items

    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(flag, f"must be at least 1, got {value}")
    if args.out:
        check_output_file(args.out, "--out")
    items = load_truthfulqa(args.csv)
    n_all = len(items)
    excluded = 0
    if args.holdout:
        trained = trained_rows(args.holdout, args.csv)
        excluded = sum(i.row in trained for i in items)
        items = [i for i in items if i.row not in trained]
    items = sample_items(items, args.limit, args.seed)
    adapter = adapter_dir(args.adapter) if args.adapter else None
    model_name = args.model or (run_model_name(args.adapter) if args.adapter else None)
    if not model_name:
        raise ConfigError("--model", "required (or give --adapter RUN_DIR, whose config names the model)")
    overlap = None
    if args.adapter and not args.holdout:
        trained = trained_rows(args.adapter, args.csv, strict=False)
        overlap = sum(i.row in trained for i in items) if trained else 0
        if overlap:
            print(
                f"warning: the adapter trained on {overlap} of the scored questions; use --holdout "
                f"{args.adapter} to score only unseen ones",
                file=sys.stderr,
            )
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    seed = (run_config(args.adapter) or {}).get("train", {}).get("seed", 0) if args.adapter else 0
    model, tokenizer = load_for_scoring(model_name, adapter, dtype=getattr(torch, args.dtype), device=device, seed=seed)
    if args.prompt == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ConfigError("--prompt", f"{model_name} has no chat template; use --prompt qa")
    t0 = time.time()
    result = evaluate_truthfulqa(model, tokenizer, items, prompt=args.prompt, batch_size=args.batch_size, device=device)
    summary = {
        "benchmark": "truthfulqa",
        "model": model_name,
        "adapter": args.adapter,
        **result.summary(),
        "questions_in_csv": n_all,
        "limit": args.limit,
        "seed": args.seed if args.limit else None,
        "holdout_of": args.holdout,
        "excluded_trained": excluded if args.holdout else None,
        "trained_on_scored": overlap,
        "csv": str(args.csv),
        "threads": args.threads,
        "device": str(device),
        "wall_time_s": round(time.time() - t0, 1),
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.per_question.to_csv(out.with_suffix(".csv"), index=False)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
