"""``kss eval truthfulqa``: MC1/MC2 of a base model or a trained adapter (a run directory)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..commands import command
from ..errors import ConfigError, DataError
from ..output_paths import check_output_file

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


@command("eval", "evaluate a model or adapter on a benchmark (truthfulqa)")(_add_args)
def _eval(args: argparse.Namespace) -> int:
    if args.benchmark == "truthfulqa":
        summary = run_truthfulqa(args)
        print(json.dumps(summary))
    return 0


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
    seed = (_run_config(args.adapter) or {}).get("train", {}).get("seed", 0) if args.adapter else 0
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


def adapter_dir(path: str) -> Path:
    p = Path(path)
    for candidate in (p / "adapter", p):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise DataError(f"--adapter: no PEFT adapter in {path} (a run saved with output.save_adapter: true?)")


def _run_config(run_dir: str) -> dict[str, Any] | None:
    from ..rundir import RunDirectory

    return RunDirectory(run_dir).read_config()


def run_model_name(run_dir: str) -> str | None:
    cfg = _run_config(run_dir)
    return cfg["model"]["name"] if cfg else None


def trained_rows(run_dir: str, csv: str, *, strict: bool = True) -> set[int]:
    """CSV rows a run trained on (from its splits.json), when it trained on this CSV; else empty / an error."""
    from ..recorded_paths import find_recorded_path
    from ..rundir import RunDirectory
    from ..tasks.causal_lm import SPLITS_NAME

    cfg = _run_config(run_dir)
    splits = RunDirectory(run_dir).read_json(SPLITS_NAME)
    if cfg is None or splits is None:
        if strict:
            raise DataError(f"--holdout: {run_dir} is not a causal-lm run directory (no config.yaml/splits.json)")
        return set()
    train_file = (cfg.get("data") or {}).get("train")
    # Absolute in runs written now; a relative path (older runs) is looked for where the run started from.
    recorded = find_recorded_path(run_dir, str(train_file)) if train_file else None
    same = recorded is not None and recorded.resolve() == Path(csv).resolve()
    if not same:
        if strict:
            raise DataError(f"--holdout: {run_dir} trained on {train_file}, not on {csv}; nothing to hold out")
        return set()
    return set(splits["train"])


def load_for_scoring(name: str, adapter: Path | None, *, dtype: Any, device: Any, seed: int = 0) -> tuple[Any, Any]:
    """Base causal LM (+ merged adapter) in eval mode, and its tokenizer. ``seed`` only matters for the
    random built-in test models, whose base weights are a function of the training seed."""
    from ..models import load_model, load_tokenizer

    tokenizer = load_tokenizer(name)
    model = load_model(name, task="causal-lm", tokenizer=tokenizer, seed=seed)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer
